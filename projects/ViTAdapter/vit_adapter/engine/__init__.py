"""Engine: trainer pieces, launching, optimizer parameter groups."""
