// The SentencePiece tokenizer of LLaMA 1/2 model directories (tokenizer.model), and
// LoadTokenizer, which picks the implementation a model directory needs.
//
// Part of herd_tokenizer_spm, which links libsentencepiece: see spm_processor.h for the binaries
// that must not link it (anything with gRPC/protobuf or libtorch).
#ifndef HERD_DATASETS_SENTENCEPIECE_TOKENIZER_H_
#define HERD_DATASETS_SENTENCEPIECE_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "datasets/tokenizer.h"

namespace herd::datasets {

// A tokenizer from tokenizer.model bytes and the directory's tokenizer_config.json. Special ids
// are the model's own, overridden by the config's bos_token/eos_token when it names them (an
// unknown name is INVALID_ARGUMENT). `source` names the model in errors.
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeSentencePieceTokenizer(
    const std::string& model_bytes, const TokenizerConfig& config, const std::string& source);

// <model_dir>/tokenizer.model (+ tokenizer_config.json if present). NOT_FOUND without the model.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& model_dir);

// The tokenizer of a model directory: tokenizer.model → SentencePiece; tokenizer.json alone →
// byte-level BPE (bpe_tokenizer.h, LLaMA 3); neither → NOT_FOUND.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_SENTENCEPIECE_TOKENIZER_H_
