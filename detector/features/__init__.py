"""Images to pool5: conv trunks, multi-scale conv5 maps and their cache, window mapping, the spatial pyramid."""
