"""adatsq.calib."""
