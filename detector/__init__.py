# PyTorch's CPU allocator backs large allocations with transparent huge pages
# when THP_MEM_ALLOC_ENABLE=1 (read once, when torch is first imported). The
# pooled feature vectors are ~100 MB per image; with 4 KB pages, first-touch
# page faults cost about as much as the pooling itself (docs/benchmarks_pooling.md:
# pooling 2000 windows took 42-46 ms with it, 86-101 ms without). Only takes effect
# if detector is imported before torch, as tools/ and tests do; setdefault
# keeps a value the user set.
import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
