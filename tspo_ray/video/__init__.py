"""Videos: decoding, the 1-fps candidate grid, CLIP encoders and the feature store."""
