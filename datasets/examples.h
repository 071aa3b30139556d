// Records to training examples (DESIGN.md §4): token ids with a per-token `trained` mask, BOS/EOS
// and chat templates applied. Pure functions over a Tokenizer.
//
//   text               [BOS] enc(text) [EOS]                      all trained
//   prompt_completion  [BOS] enc(prompt) enc'(completion) [EOS]   completion and EOS trained
//   alpaca             prompt_completion over Stanford Alpaca's prompt
//   chat (llama2)      <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>
//                      <s>[INST] {user} [/INST] ...               assistant turns + their EOS
//   chat (llama3)      <|begin_of_text|> then per message         assistant contents + their
//                      <|start_header_id|>{role}<|end_header_id|>  <|eot_id|>
//                      \n\n{content}<|eot_id|>
//   tokenized          input_ids as given                         labels != -100 (all if absent)
//
// enc' = TextStart::kContinuation: the completion continues the prompt's text, so " Paris" is
// "▁Paris" (not "▁▁Paris"), exactly the tokens of enc(prompt + completion) when the completion
// starts with a space or newline. `train_on_inputs` trains every token after the first.
#ifndef HERD_DATASETS_EXAMPLES_H_
#define HERD_DATASETS_EXAMPLES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "datasets/records.h"
#include "datasets/tokenizer.h"

namespace herd::datasets {

// One document. trained[i] = 1 when ids[i] is a prediction target (the loss at position i - 1
// predicts it); trained[0] is always 0 because nothing predicts the first token.
struct Example {
  std::vector<int32_t> ids;
  std::vector<uint8_t> trained;

  int64_t trained_count() const;  // tokens with trained = 1
};

enum class ChatTemplate { kAuto, kLlama2, kLlama3 };

std::string_view ChatTemplateName(ChatTemplate t);  // "auto", "llama2", "llama3"
std::optional<ChatTemplate> ParseChatTemplateName(std::string_view name);

// Recognises a built-in template from the markers in a model's Jinja chat_template. Herd has no
// Jinja engine: an unrecognised or empty template is INVALID_ARGUMENT saying to set chat_template.
absl::StatusOr<ChatTemplate> DetectChatTemplate(std::string_view jinja);

struct ExampleOptions {
  bool train_on_inputs = false;  // train on every token, not only outputs
  ChatTemplate chat_template =
      ChatTemplate::kAuto;  // kAuto: detected from the tokenizer's template
};

// The example of one record. INVALID_ARGUMENT naming the field on a record the template cannot
// render (roles not alternating user/assistant, token ids out of range); callers add the line.
absl::StatusOr<Example> BuildExample(const Record& record, const Tokenizer& tokenizer,
                                     const ExampleOptions& options);

// The text the chat template renders, with BOS/EOS spelled as `bos`/`eos` (LLaMA-3's header and
// end-of-turn tokens as themselves); equal to what the model's Jinja template renders (checked
// against transformers in tests/python).
absl::StatusOr<std::string> RenderChat(const std::vector<Message>& messages, ChatTemplate t,
                                       std::string_view bos, std::string_view eos);

// Python's str.strip() (Jinja's |trim and .strip()): strips Unicode whitespace from both ends of
// UTF-8 text.
std::string_view PyStrip(std::string_view text);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_EXAMPLES_H_
