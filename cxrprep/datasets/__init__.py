"""Dataset readers, one module per source: MIMIC-CXR reports (mimic), CheXpert/ChestX-ray14 label prompts
(prompts), image folders (folder), Open-I (openi), RSNA/SIIM/VinDr (benchmarks) and the 5x200 builders
(chexpert5x200, mimic5x200). Each turns its source into shard rows through cxrprep.shards."""
