"""revive runtime: checkpoint and restore live Linux x86_64 processes using the parasite and restorer blobs."""
