// A tokenizer for unit tests whose ids can be written by hand: one id per byte (4 + byte), a
// space is id 3 ("▁"), and TextStart::kDocument adds a leading "▁" unless the text starts with a
// space, as SentencePiece's dummy prefix does under Hugging Face's rule. <unk> 0, <s> 1, </s> 2.
#ifndef HERD_DATASETS_FAKE_TOKENIZER_H_
#define HERD_DATASETS_FAKE_TOKENIZER_H_

#include <string>
#include <string_view>
#include <vector>

#include "datasets/tokenizer.h"

namespace herd::datasets {

class FakeTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kSpace = 3;

  explicit FakeTokenizer(TextStart after_special = TextStart::kContinuation, int32_t bos = 1,
                         int32_t eos = 2, std::string chat_template = "[INST] <<SYS>>")
      : Tokenizer(Info(after_special, bos, eos, std::move(chat_template))) {}

  // The ids of `text` byte by byte, with no prefix rule: Ids(" hi") = {3, 4+'h', 4+'i'}.
  static std::vector<int32_t> Ids(std::string_view text) {
    std::vector<int32_t> ids;
    for (char c : text) ids.push_back(c == ' ' ? kSpace : 4 + static_cast<uint8_t>(c));
    return ids;
  }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              TextStart start) const override {
    std::vector<int32_t> ids;
    if (start == TextStart::kDocument && !text.empty() && text[0] != ' ') ids.push_back(kSpace);
    for (int32_t id : Ids(text)) ids.push_back(id);
    return ids;
  }

  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const override {
    std::string text;
    for (int32_t id : ids) {
      if (id == kSpace) text += ' ';
      if (id >= 4) text += static_cast<char>(id - 4);
    }
    return text;
  }

 private:
  static TokenizerInfo Info(TextStart after_special, int32_t bos, int32_t eos, std::string tmpl) {
    TokenizerInfo info;
    info.kind = "fake";
    info.vocab_size = 4 + 256;
    info.bos_id = bos;
    info.eos_id = eos;
    info.after_special = after_special;
    info.chat_template = std::move(tmpl);
    info.model_sha256 = "fake-model";
    return info;
  }
};

}  // namespace herd::datasets

#endif  // HERD_DATASETS_FAKE_TOKENIZER_H_
