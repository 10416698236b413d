"""Image directory: the checkpoint model, its files, their validation and display."""
