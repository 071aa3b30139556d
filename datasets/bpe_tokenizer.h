// The Hugging Face tokenizer.json byte-level BPE tokenizer of LLaMA 3 model directories, written
// here without the tokenizers library (DESIGN.md §4). Supported: model BPE (vocab, merges as
// "a b" strings or [a, b] pairs, ignore_merges), added_tokens, no normalizer, and the LLaMA-3
// pre-tokenizer Sequence[Split(kLlama3SplitPattern, Isolated), ByteLevel(use_regex: false)].
// Anything else is UNIMPLEMENTED, naming what is not supported, rather than encoded differently.
//
// Special-token policy (tokenizer.h): added tokens marked special are never produced by Encode,
// so "<|eot_id|>" in user text is the ordinary tokens of those characters (Hugging Face with
// split_special_tokens=True); added tokens not marked special are matched in text as Hugging Face
// does. Part of herd_datasets: no external library.
#ifndef HERD_DATASETS_BPE_TOKENIZER_H_
#define HERD_DATASETS_BPE_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "datasets/tokenizer.h"

namespace herd::datasets {

// A tokenizer from tokenizer.json's text and the directory's tokenizer_config.json, whose
// bos_token/eos_token name the BOS/EOS ids (an unknown name is INVALID_ARGUMENT; unset gives -1).
// `source` names the file in errors: INVALID_ARGUMENT on malformed JSON or an inconsistent
// vocabulary, UNIMPLEMENTED on a configuration Herd does not implement.
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeBpeTokenizer(const std::string& tokenizer_json,
                                                            const TokenizerConfig& config,
                                                            const std::string& source);

// <model_dir>/tokenizer.json (+ tokenizer_config.json if present). NOT_FOUND without it.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizer(const std::string& model_dir);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_BPE_TOKENIZER_H_
