"""The model: dataset split, data loading, networks, losses, training, fine-tuning and export."""
