"""The training stages: fine-tuning (fc or conv, bank or streamed), SVMs with hard negatives, box regression, and their runner."""
