#!/bin/sh
# Regenerates the seeds that are binary files written by plumb itself: the
# GGUF models and vocabularies of fuzz/corpus/gguf (plumb synth with tiny
# shapes, fuzz_mkvocab) and the bundles of fuzz/corpus/bundle_tar (plumb
# export). Run it after a change to the GGUF writer or the bundle format;
# the text seeds (templates, bodies, INI files, manifests) are kept by
# hand. Each file stays under about 64 KiB.
#
#   fuzz/seeds.sh [BUILD]      BUILD: a build folder (default build/release)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build/release}
plumb=$build/plumb
mkvocab=$build/fuzz/fuzz_mkvocab
gguf=$src/fuzz/corpus/gguf
tar=$src/fuzz/corpus/bundle_tar
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$gguf" "$tar"

# vocabularies: SentencePiece with a built-in template's markers, BPE with
# Qwen3's template (tools, reasoning)
"$mkvocab" "$gguf/vocab-spm-chatml.gguf" spm - "$src/fuzz/corpus/template/google-gemma-2-2b-it.jinja" llama
"$mkvocab" "$gguf/vocab-bpe-qwen3.gguf" bpe qwen2 "$src/fuzz/corpus/template/Qwen-Qwen3-0.6B.jinja" qwen2

# tiny models of each architecture's binding: llama (Q8_0, GQA), qwen2
# (biases, F16), qwen3 (Q/K norms, Q4_0), a tied output
tiny=dim=32,layers=1,heads=2,kv_heads=1,ffn=64,vocab=300,ctx=64
"$plumb" synth --dims arch=llama,$tiny --type Q8_0 "$gguf/llama-q8_0.gguf" >/dev/null
"$plumb" synth --dims arch=qwen2,$tiny --type F16 "$gguf/qwen2-f16.gguf" >/dev/null
"$plumb" synth --dims arch=qwen3,$tiny --type Q4_0 "$gguf/qwen3-q4_0.gguf" >/dev/null
"$plumb" synth --dims arch=llama,$tiny,tied=1 --type Q4_1 "$gguf/llama-tied-q4_1.gguf" >/dev/null

# bundles: one model; two names of one blob and a second blob; gzip'd
export PLUMB_HOME="$tmp/home"
"$mkvocab" "$tmp/a.gguf" spm - - llama
"$mkvocab" "$tmp/b.gguf" bpe gpt-2 - qwen2
"$plumb" pull "$tmp/a.gguf" --name tiny:q8_0 >/dev/null
"$plumb" pull "$tmp/b.gguf" --name other >/dev/null
"$plumb" tag tiny:q8_0 tiny:latest >/dev/null
"$plumb" export tiny:q8_0 -o "$tar/one-model.tar" >/dev/null
"$plumb" export tiny:q8_0 tiny:latest other -o "$tar/two-blobs.tar" >/dev/null
gzip -9n <"$tar/one-model.tar" >"$tar/one-model.tar.gz"
ls -l "$gguf" "$tar"

# download responses (written without plumb)
"$src/fuzz/seeds-download.sh"
