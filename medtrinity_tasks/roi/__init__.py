"""Regions of interest: from source annotations (and, later, expert models) to described ROIs."""
