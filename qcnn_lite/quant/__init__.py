"""Building a Q-CNN: product quantization, error correction, the quantizer, the table guard,
fine-tuning and the settings search."""
