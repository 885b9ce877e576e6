"""sweeper: LoRA / ReLoRA / QLoRA / full-rank training over grids of datasets x models x methods.

A grid point's path: __main__ (Hydra app; cli checks the command line) -> launch (plan, submit,
watch) -> train.run_point (data -> model -> method -> loop) -> records -> results (tables, report).
Bottom layer, torch-free: paths, records (the record contract, Status), runs (run identity, the skip
rule), ledger (sweep.json), config (compose), shell.
"""
