// SentencePiece tokenizer: SpmProcessor (standard types) adapted to the Tokenizer interface.
#include "datasets/sentencepiece_tokenizer.h"

#include <filesystem>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/file_util.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "datasets/bpe_tokenizer.h"
#include "datasets/spm_processor.h"

namespace herd::datasets {
namespace {

constexpr std::string_view kMetaspace = "\xe2\x96\x81";  // "▁", SentencePiece's space

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(TokenizerInfo info, std::unique_ptr<SpmProcessor> sp)
      : Tokenizer(std::move(info)), sp_(std::move(sp)) {}

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              TextStart start) const override {
    // Hugging Face's Metaspace adds the leading space only when the text has none; SentencePiece
    // would add a second one (" Hi" -> "▁▁Hi"). DESIGN.md §4 makes Hugging Face the reference.
    const bool starts_with_space = text.starts_with(' ') || text.starts_with(kMetaspace);
    const bool dummy_prefix = start == TextStart::kDocument && !starts_with_space;
    std::vector<int> ids;
    if (std::string error = sp_->Encode(text, dummy_prefix, &ids); !error.empty()) {
      return absl::InvalidArgumentError(herd::StrCat("tokenizing text: ", error));
    }
    static_assert(std::is_same_v<int, int32_t>, "the ids are handed over without a copy");
    return ids;
  }

  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const override {
    std::vector<int> v;
    v.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) {
        return absl::InvalidArgumentError(
            herd::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")"));
      }
      v.push_back(id);
    }
    std::string text;
    if (std::string error = sp_->Decode(v, &text); !error.empty()) {
      return absl::InvalidArgumentError(herd::StrCat("decoding: ", error));
    }
    return text;
  }

  absl::StatusOr<std::string> TokenBytes(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(
          herd::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")"));
    }
    std::string piece = sp_->IdToPiece(id);
    if (sp_->IsControl(id) || sp_->IsUnknown(id)) return piece;  // "<s>", "</s>", "<unk>"
    // Byte fallback: "<0x0A>" is the byte 0x0A.
    if (piece.size() == 6 && piece.starts_with("<0x") && piece.back() == '>') {
      return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    }
    std::string out;
    for (size_t pos = 0; pos < piece.size();) {
      if (piece.compare(pos, kMetaspace.size(), kMetaspace) == 0) {
        out += ' ';
        pos += kMetaspace.size();
      } else {
        out += piece[pos++];
      }
    }
    return out;
  }

 private:
  const std::unique_ptr<SpmProcessor> sp_;
};

// The id of a special token named by tokenizer_config.json, or the model's own when unnamed.
absl::StatusOr<int32_t> SpecialId(const SpmProcessor& sp, const std::string& name, int model_id,
                                  std::string_view key, const std::string& source) {
  if (name.empty()) return model_id;
  const int id = sp.PieceToId(name);
  if (sp.IsUnknown(id) && sp.IdToPiece(id) != name) {
    return absl::InvalidArgumentError(herd::StrCat(source, ": tokenizer_config.json ", key, " '",
                                                   name, "' is not in tokenizer.model"));
  }
  return id;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeSentencePieceTokenizer(
    const std::string& model_bytes, const TokenizerConfig& config, const std::string& source) {
  std::unique_ptr<SpmProcessor> sp;
  if (std::string error = SpmProcessor::Load(model_bytes, &sp); !error.empty()) {
    return absl::InvalidArgumentError(herd::StrCat(source, ": not a SentencePiece model: ", error));
  }
  TokenizerInfo info;
  info.kind = "sentencepiece";
  info.vocab_size = sp->piece_size();
  HERD_ASSIGN_OR_RETURN(info.bos_id,
                        SpecialId(*sp, config.bos_token, sp->bos_id(), "bos_token", source));
  HERD_ASSIGN_OR_RETURN(info.eos_id,
                        SpecialId(*sp, config.eos_token, sp->eos_id(), "eos_token", source));
  info.after_special = config.legacy ? TextStart::kDocument : TextStart::kContinuation;
  info.chat_template = config.chat_template;
  info.model_sha256 = Sha256Hex(model_bytes);
  info.config_sha256 = config.sha256;
  return std::make_unique<SentencePieceTokenizer>(std::move(info), std::move(sp));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(
    const std::string& model_dir) {
  const std::string path = model_dir + "/tokenizer.model";
  HERD_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  HERD_ASSIGN_OR_RETURN(TokenizerConfig config, ReadTokenizerConfig(model_dir));
  return MakeSentencePieceTokenizer(bytes, config, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(fs::path(model_dir) / "tokenizer.model", ec)) {
    return LoadSentencePieceTokenizer(model_dir);
  }
  if (fs::exists(fs::path(model_dir) / "tokenizer.json", ec)) {
    return LoadBpeTokenizer(model_dir);
  }
  return absl::NotFoundError(
      herd::StrCat(model_dir, ": no tokenizer.model or tokenizer.json in the model directory"));
}

}  // namespace herd::datasets
