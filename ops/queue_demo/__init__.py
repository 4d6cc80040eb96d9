"""The practical's SQS queue demo: watch standard and FIFO queue semantics from a terminal."""
