"""trainers: train and evaluate one design on a task (SST-2, MNLI, XSum, WMT16 en-ro); knows nothing of search."""
