// The tokenizer interface the data path is written against (DESIGN.md §4), and the model
// directory's tokenizer_config.json as far as tokenisation depends on it. Implementations:
// SentencePiece (sentencepiece_tokenizer.h, LLaMA 1/2); Hugging Face tokenizer.json byte-level
// BPE (bpe_tokenizer.h, LLaMA 3).
//
// Special-token policy: Encode never produces a special token from text. The string "</s>" in a
// user's data encodes as the ordinary pieces for those characters; only templates insert special
// ids, and they insert them as ids, never as text.
#ifndef HERD_DATASETS_TOKENIZER_H_
#define HERD_DATASETS_TOKENIZER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace herd::datasets {

// Where a piece of text sits, which decides whether SentencePiece invents a leading space (its
// "dummy prefix"). Byte-level BPE tokenizers have no such thing and treat both alike.
enum class TextStart {
  // The text starts a document: "Hello" encodes as "▁Hello". As in Hugging Face (Metaspace),
  // no space is added when the text already starts with one, so " Hello" is "▁Hello" too.
  kDocument,
  // The text continues earlier text or a special token: "Hello" encodes as "Hello", " Hello"
  // as "▁Hello". Used for completions and for template text.
  kContinuation,
};

// tokenizer_config.json, the parts that change token ids.
struct TokenizerConfig {
  bool present = false;   // the file exists
  std::string bos_token;  // "" when unset or null
  std::string eos_token;
  // Hugging Face's `legacy` flag for SentencePiece models: false (transformers 5's default)
  // adds no space after a special token; true adds one, as Meta's reference code does.
  bool legacy = false;
  std::string chat_template;  // Jinja source; "" when none
  std::string sha256;         // of the file's bytes; "" when absent
};

// Parses tokenizer_config.json. Tokens may be strings or AddedToken objects ({"content": ...});
// chat_template may be a string or Hugging Face's list of {name, template} (the "default" one is
// taken). INVALID_ARGUMENT naming `source` and the key on a malformed file.
absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(std::string_view json,
                                                     std::string_view source);

// Reads <model_dir>/tokenizer_config.json; a missing file gives a config with present = false.
absl::StatusOr<TokenizerConfig> ReadTokenizerConfig(const std::string& model_dir);

// What a loaded tokenizer says about itself; constant after loading.
struct TokenizerInfo {
  std::string kind;        // "sentencepiece" or "bpe"
  int32_t vocab_size = 0;  // ids are in [0, vocab_size)
  int32_t bos_id = -1;     // -1 when the model has none
  int32_t eos_id = -1;
  // How text right after a template's special token is encoded (see TokenizerConfig::legacy).
  TextStart after_special = TextStart::kContinuation;
  std::string chat_template;  // from tokenizer_config.json; "" when none
  std::string model_sha256;   // of the vocabulary file (tokenizer.model or tokenizer.json)
  // The added special tokens by content (LLaMA 3's <|eot_id|>, <|start_header_id|>, ...), which
  // only templates insert, as ids. Empty for SentencePiece, whose templates need only BOS/EOS.
  std::map<std::string, int32_t, std::less<>> special_tokens;
  std::string config_sha256;  // of tokenizer_config.json; "" when absent
};

// Immutable after loading: Encode and Decode may be called from several threads at once.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`, without BOS/EOS. INVALID_ARGUMENT if the text cannot be encoded.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      TextStart start) const = 0;
  // The text of `ids`; special ids decode to nothing. INVALID_ARGUMENT on an id out of range.
  virtual absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const = 0;
  // The bytes one token stands for inside a longer text, for showing token boundaries (`herd
  // datasets inspect`): unlike Decode({id}), a SentencePiece "▁" is a space even at the start,
  // a byte-fallback token is its byte, and a special token is its own spelling ("<s>",
  // "<|eot_id|>"). The bytes may be part of a UTF-8 character. INVALID_ARGUMENT out of range.
  // The default decodes the id alone.
  virtual absl::StatusOr<std::string> TokenBytes(int32_t id) const;

  const TokenizerInfo& info() const { return info_; }
  int32_t bos_id() const { return info_.bos_id; }
  int32_t eos_id() const { return info_.eos_id; }
  int32_t vocab_size() const { return info_.vocab_size; }

 protected:
  explicit Tokenizer(TokenizerInfo info) : info_(std::move(info)) {}

 private:
  const TokenizerInfo info_;
};

}  // namespace herd::datasets

#endif  // HERD_DATASETS_TOKENIZER_H_
