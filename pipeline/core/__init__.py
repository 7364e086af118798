"""The core every stage uses: errors, atomic files, manifests, locks, fingerprints, the stage graph and run records."""
