"""blobgen: turns linked freestanding PIE objects into loadable blobs and their C/Python descriptions."""
