"""Loops and run plumbing: run directories, logging, checkpoints, seeding."""
