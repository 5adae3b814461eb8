"""Door check-in: scans, undo, stats, and the offline bundle."""
