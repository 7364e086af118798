"""Region configs: the TOML file parsed into typed, frozen sections (torch-free, geo-free)."""
