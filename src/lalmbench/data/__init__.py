"""Data: shard listing and download, audio decoding, examples, the training mixture, batches."""
