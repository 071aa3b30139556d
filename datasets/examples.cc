// Records to examples: templates are built as segments (text or a special id, each with its
// trained flag), then encoded segment by segment. Segment boundaries fall where the reference
// tokenizer cannot merge across them (before a space, at a special token), so the ids equal those
// of the whole rendered text; tests/python/tokenizer_parity.py checks that against transformers.
#include "datasets/examples.h"

#include <algorithm>

#include "common/status.h"
#include "common/strings.h"

namespace herd::datasets {
namespace {

constexpr std::string_view kAlpacaWithInput =
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n";
constexpr std::string_view kAlpacaNoInput =
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n";

// A piece of a rendered document: text to encode, or one special id.
struct Segment {
  std::string text;
  int32_t special = -1;  // >= 0: this id, no text
  TextStart start = TextStart::kContinuation;
  bool trained = false;
};

Segment Text(std::string text, TextStart start, bool trained) {
  return Segment{std::move(text), -1, start, trained};
}
Segment Special(int32_t id, bool trained) {
  return Segment{"", id, TextStart::kContinuation, trained};
}

// Code point at the start of UTF-8 `s` and its length; a malformed byte counts as itself.
std::pair<uint32_t, size_t> DecodeFirst(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t c = b(0);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (n > s.size()) return {c, 1};
  if (n == 1) return {c, 1};
  uint32_t cp = c & (0x7f >> n);
  for (size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xc0) != 0x80) return {c, 1};
    cp = (cp << 6) | (b(i) & 0x3f);
  }
  return {cp, n};
}

// Python's str.isspace().
bool IsPySpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

// A message's tokens are trained when its weight says so, else by role.
bool MessageTrained(const Message& m, const ExampleOptions& options) {
  if (m.weight) return *m.weight == 1;
  return m.role == "assistant" || options.train_on_inputs;
}

absl::StatusOr<std::vector<Segment>> Llama2Chat(const std::vector<Message>& messages,
                                                const Tokenizer& tokenizer,
                                                const ExampleOptions& options) {
  std::vector<Segment> out;
  const bool has_system = !messages.empty() && messages[0].role == "system";
  const size_t first = has_system ? 1 : 0;
  const TextStart after_special = tokenizer.info().after_special;
  for (size_t k = first; k < messages.size(); ++k) {
    const Message& m = messages[k];
    const size_t turn = k - first;
    const std::string where = herd::StrCat("messages[", k, "].role");
    if (m.role == "system") {
      return absl::InvalidArgumentError(
          herd::StrCat(where, ": a system message may only come first"));
    }
    if ((m.role == "user") != (turn % 2 == 0)) {
      return absl::InvalidArgumentError(
          herd::StrCat(where,
                       ": roles must alternate user/assistant/user/... after an optional system "
                       "message (got '",
                       m.role, "')"));
    }
    bool trained = MessageTrained(m, options);
    std::string content = m.content;
    if (turn == 0 && has_system) {
      // The system prompt is rendered inside the first user turn, as in the template.
      content = herd::StrCat("<<SYS>>\n", messages[0].content, "\n<</SYS>>\n\n", m.content);
      trained = trained && MessageTrained(messages[0], options);
    }
    if (m.role == "user") {
      const bool has_bos = tokenizer.bos_id() >= 0;
      if (has_bos) out.push_back(Special(tokenizer.bos_id(), trained));
      // Without a BOS the first turn starts the document; later ones follow an EOS.
      const TextStart start = has_bos || !out.empty() ? after_special : TextStart::kDocument;
      out.push_back(Text(herd::StrCat("[INST] ", PyStrip(content), " [/INST]"), start, trained));
    } else {
      out.push_back(
          Text(herd::StrCat(" ", PyStrip(content), " "), TextStart::kContinuation, trained));
      out.push_back(Special(tokenizer.eos_id(), trained));
    }
  }
  return out;
}

constexpr std::string_view kStartHeader = "<|start_header_id|>";
constexpr std::string_view kEndHeader = "<|end_header_id|>";
constexpr std::string_view kEndOfTurn = "<|eot_id|>";

absl::StatusOr<int32_t> TemplateTokenId(const Tokenizer& tokenizer, std::string_view name) {
  const auto& special = tokenizer.info().special_tokens;
  auto it = special.find(name);
  if (it == special.end()) {
    return absl::FailedPreconditionError(herd::StrCat(
        "the llama3 chat template needs the special token ", name,
        ", which the model's tokenizer does not have; is this a LLaMA-3 model?"));
  }
  return it->second;
}

// Meta's template: bos_token, then per message
//   <|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>
// in any order of roles. A trained assistant turn trains its content and <|eot_id|>, not its
// header; "\n\n" is a pre-tokenizer piece of its own, so it can be a segment of its own.
absl::StatusOr<std::vector<Segment>> Llama3Chat(const std::vector<Message>& messages,
                                                const Tokenizer& tokenizer,
                                                const ExampleOptions& options) {
  HERD_ASSIGN_OR_RETURN(const int32_t start_header, TemplateTokenId(tokenizer, kStartHeader));
  HERD_ASSIGN_OR_RETURN(const int32_t end_header, TemplateTokenId(tokenizer, kEndHeader));
  HERD_ASSIGN_OR_RETURN(const int32_t end_of_turn, TemplateTokenId(tokenizer, kEndOfTurn));
  std::vector<Segment> out;
  if (tokenizer.bos_id() >= 0) out.push_back(Special(tokenizer.bos_id(), false));
  for (const Message& m : messages) {
    const bool trained = MessageTrained(m, options);
    const bool header_trained = m.role == "assistant" ? options.train_on_inputs : trained;
    out.push_back(Special(start_header, header_trained));
    out.push_back(Text(m.role, TextStart::kContinuation, header_trained));
    out.push_back(Special(end_header, header_trained));
    out.push_back(Text("\n\n", TextStart::kContinuation, header_trained));
    out.push_back(Text(std::string(PyStrip(m.content)), TextStart::kContinuation, trained));
    out.push_back(Special(end_of_turn, trained));
  }
  return out;
}

absl::StatusOr<std::vector<Segment>> ChatSegments(const Record& record, const Tokenizer& tokenizer,
                                                  const ExampleOptions& options) {
  ChatTemplate t = options.chat_template;
  if (t == ChatTemplate::kAuto) {
    HERD_ASSIGN_OR_RETURN(t, DetectChatTemplate(tokenizer.info().chat_template));
  }
  if (t == ChatTemplate::kLlama3) return Llama3Chat(record.messages, tokenizer, options);
  return Llama2Chat(record.messages, tokenizer, options);
}

// [BOS] prompt completion [EOS], the completion continuing the prompt's text.
std::vector<Segment> PromptCompletion(std::string prompt, std::string completion,
                                      const Tokenizer& tokenizer, const ExampleOptions& options) {
  std::vector<Segment> out;
  if (tokenizer.bos_id() >= 0) out.push_back(Special(tokenizer.bos_id(), false));
  const bool no_prompt = prompt.empty();
  out.push_back(Text(std::move(prompt), TextStart::kDocument, options.train_on_inputs));
  out.push_back(Text(std::move(completion),
                     no_prompt ? TextStart::kDocument : TextStart::kContinuation, true));
  out.push_back(Special(tokenizer.eos_id(), true));
  return out;
}

absl::StatusOr<Example> Tokenized(const Record& record, const Tokenizer& tokenizer) {
  Example ex;
  const bool has_labels = !record.labels.empty();
  for (size_t i = 0; i < record.input_ids.size(); ++i) {
    const int64_t id = record.input_ids[i];
    if (id < 0 || id >= tokenizer.vocab_size()) {
      return absl::InvalidArgumentError(herd::StrCat("input_ids[", i, "]: ", id,
                                                     " is outside the vocabulary [0, ",
                                                     tokenizer.vocab_size(), ")"));
    }
    bool trained = true;
    if (has_labels) {
      const int64_t label = record.labels[i];
      if (label != -100 && label != id) {
        return absl::InvalidArgumentError(
            herd::StrCat("labels[", i, "]: must be -100 or equal input_ids[", i, "] (", id,
                         "), got ", label, "; labels are not shifted, Herd shifts them"));
      }
      trained = label != -100;
    }
    ex.ids.push_back(static_cast<int32_t>(id));
    ex.trained.push_back(trained ? 1 : 0);
  }
  ex.trained[0] = 0;
  return ex;
}

absl::StatusOr<Example> Encode(const std::vector<Segment>& segments, const Tokenizer& tokenizer) {
  Example ex;
  for (const Segment& s : segments) {
    if (s.special >= 0) {
      ex.ids.push_back(s.special);
      ex.trained.push_back(s.trained ? 1 : 0);
      continue;
    }
    if (s.text.empty()) continue;
    HERD_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenizer.Encode(s.text, s.start));
    if (ex.ids.empty()) {
      ex.ids = std::move(ids);
    } else {
      ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
    }
    ex.trained.resize(ex.ids.size(), s.trained ? 1 : 0);
  }
  if (!ex.trained.empty()) ex.trained[0] = 0;
  return ex;
}

}  // namespace

int64_t Example::trained_count() const {
  return std::count(trained.begin(), trained.end(), uint8_t{1});
}

std::string_view ChatTemplateName(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kAuto:
      return "auto";
    case ChatTemplate::kLlama2:
      return "llama2";
    case ChatTemplate::kLlama3:
      return "llama3";
  }
  return "unknown";
}

std::optional<ChatTemplate> ParseChatTemplateName(std::string_view name) {
  for (ChatTemplate t : {ChatTemplate::kAuto, ChatTemplate::kLlama2, ChatTemplate::kLlama3}) {
    if (ChatTemplateName(t) == name) return t;
  }
  return std::nullopt;
}

absl::StatusOr<ChatTemplate> DetectChatTemplate(std::string_view jinja) {
  if (jinja.empty()) {
    return absl::InvalidArgumentError(
        "the model's tokenizer_config.json has no chat_template; set chat_template: llama2 or "
        "llama3");
  }
  // Both LLaMA-2 markers: Mistral's template has [INST] but renders differently and has no <<SYS>>.
  if (jinja.find("[INST]") != std::string_view::npos &&
      jinja.find("<<SYS>>") != std::string_view::npos) {
    return ChatTemplate::kLlama2;
  }
  if (jinja.find("<|start_header_id|>") != std::string_view::npos) return ChatTemplate::kLlama3;
  return absl::InvalidArgumentError(
      "the model's chat_template is neither LLaMA-2's ([INST], <<SYS>>) nor LLaMA-3's "
      "(<|start_header_id|>), and Herd renders only those; set chat_template: llama2 or llama3 "
      "if one of them is right for this model");
}

std::string_view PyStrip(std::string_view text) {
  while (!text.empty()) {
    auto [cp, n] = DecodeFirst(text);
    if (!IsPySpace(cp)) break;
    text.remove_prefix(n);
  }
  while (!text.empty()) {
    size_t start = text.size() - 1;
    while (start > 0 && text.size() - start < 4 &&
           (static_cast<uint8_t>(text[start]) & 0xc0) == 0x80) {
      --start;
    }
    auto [cp, n] = DecodeFirst(text.substr(start));
    if (start + n != text.size() || !IsPySpace(cp)) break;
    text.remove_suffix(n);
  }
  return text;
}

absl::StatusOr<Example> BuildExample(const Record& record, const Tokenizer& tokenizer,
                                     const ExampleOptions& options) {
  if (record.format == RecordFormat::kTokenized) return Tokenized(record, tokenizer);
  if (tokenizer.eos_id() < 0) {
    return absl::FailedPreconditionError("the tokenizer has no EOS token to end documents with");
  }
  std::vector<Segment> segments;
  switch (record.format) {
    case RecordFormat::kText:
      if (tokenizer.bos_id() >= 0) segments.push_back(Special(tokenizer.bos_id(), false));
      segments.push_back(Text(record.text, TextStart::kDocument, true));
      segments.push_back(Special(tokenizer.eos_id(), true));
      break;
    case RecordFormat::kPromptCompletion:
      segments = PromptCompletion(record.prompt, record.completion, tokenizer, options);
      break;
    case RecordFormat::kAlpaca: {
      std::string prompt =
          record.input.empty()
              ? herd::StrCat(kAlpacaNoInput, record.instruction, "\n\n### Response:\n")
              : herd::StrCat(kAlpacaWithInput, record.instruction, "\n\n### Input:\n", record.input,
                             "\n\n### Response:\n");
      segments = PromptCompletion(std::move(prompt), record.output, tokenizer, options);
      break;
    }
    case RecordFormat::kChat: {
      HERD_ASSIGN_OR_RETURN(segments, ChatSegments(record, tokenizer, options));
      break;
    }
    case RecordFormat::kTokenized:
      break;
  }
  return Encode(segments, tokenizer);
}

absl::StatusOr<std::string> RenderChat(const std::vector<Message>& messages, ChatTemplate t,
                                       std::string_view bos, std::string_view eos) {
  if (t != ChatTemplate::kLlama2 && t != ChatTemplate::kLlama3) {
    return absl::UnimplementedError(
        herd::StrCat("rendering the ", ChatTemplateName(t), " chat template"));
  }
  // A stand-in tokenizer for the ids only: segments carry text and special ids, which map back
  // to `bos`/`eos` and the LLaMA-3 header tokens here.
  const std::string_view names[] = {bos, eos, kStartHeader, kEndHeader, kEndOfTurn};
  class Ids final : public Tokenizer {
   public:
    Ids() : Tokenizer(Info()) {}
    static TokenizerInfo Info() {
      TokenizerInfo info;
      info.vocab_size = 5;
      info.bos_id = 0;
      info.eos_id = 1;
      info.special_tokens = {{std::string(kStartHeader), 2},
                             {std::string(kEndHeader), 3},
                             {std::string(kEndOfTurn), 4}};
      return info;
    }
    absl::StatusOr<std::vector<int32_t>> Encode(std::string_view, TextStart) const override {
      return std::vector<int32_t>{};
    }
    absl::StatusOr<std::string> Decode(std::span<const int32_t>) const override { return ""; }
  } ids;
  HERD_ASSIGN_OR_RETURN(std::vector<Segment> segments,
                        t == ChatTemplate::kLlama2 ? Llama2Chat(messages, ids, ExampleOptions{})
                                                   : Llama3Chat(messages, ids, ExampleOptions{}));
  std::string out;
  for (const Segment& s : segments) {
    out += s.special < 0 ? std::string_view(s.text) : names[s.special];
  }
  return out;
}

}  // namespace herd::datasets
