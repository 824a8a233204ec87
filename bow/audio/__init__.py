"""Audio in: read any file to float32 mono 16 kHz, 1 s chunks, the log-mel and MFCC front ends,
read-ahead."""
