"""A trained detector: windows -> scores -> detections; on folders, pipelined, and on a labelled split."""
