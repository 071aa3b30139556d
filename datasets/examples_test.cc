// Examples: ids and masks for every format, chat rendering, errors naming the field.
#include "datasets/examples.h"

#include <initializer_list>
#include <string>
#include <vector>

#include "datasets/fake_tokenizer.h"
#include "gtest/gtest.h"

namespace herd::datasets {
namespace {

#define EXPECT_CONTAINS(text, sub) \
  EXPECT_NE(std::string(text).find(sub), std::string::npos) << "expected \"" << (sub) << "\" in: " << (text)

// A run of ids with one trained flag.
struct Part {
  std::vector<int32_t> ids;
  bool trained;
};
Part Txt(std::string_view text, bool trained) { return {FakeTokenizer::Ids(text), trained}; }
Part Id(int32_t id, bool trained) { return {{id}, trained}; }

Example Expect(std::initializer_list<Part> parts) {
  Example e;
  for (const Part& p : parts) {
    e.ids.insert(e.ids.end(), p.ids.begin(), p.ids.end());
    e.trained.insert(e.trained.end(), p.ids.size(), p.trained ? 1 : 0);
  }
  e.trained[0] = 0;
  return e;
}

Record Text(std::string text) {
  Record r;
  r.format = RecordFormat::kText;
  r.text = std::move(text);
  return r;
}
Record PromptCompletion(std::string prompt, std::string completion) {
  Record r;
  r.format = RecordFormat::kPromptCompletion;
  r.prompt = std::move(prompt);
  r.completion = std::move(completion);
  return r;
}
Record Chat(std::vector<Message> messages) {
  Record r;
  r.format = RecordFormat::kChat;
  r.messages = std::move(messages);
  return r;
}
Message M(std::string role, std::string content, std::optional<int> weight = std::nullopt) {
  return Message{std::move(role), std::move(content), weight};
}

constexpr int32_t kBos = 1, kEos = 2;

struct Case {
  std::string name;
  Record record;
  ExampleOptions options;
  Example want;
  TextStart after_special = TextStart::kContinuation;
};

ExampleOptions Inputs() {
  ExampleOptions o;
  o.train_on_inputs = true;
  return o;
}

TEST(BuildExample, IdsAndMasks) {
  Record alpaca;
  alpaca.format = RecordFormat::kAlpaca;
  alpaca.instruction = "Add";
  alpaca.input = "1 2";
  alpaca.output = "3";
  Record alpaca_no_input = alpaca;
  alpaca_no_input.input = "";
  Record tokenized;
  tokenized.format = RecordFormat::kTokenized;
  tokenized.input_ids = {1, 50, 51, 2};
  tokenized.labels = {-100, -100, 51, 2};
  Record tokenized_no_labels = tokenized;
  tokenized_no_labels.labels.clear();

  const std::vector<Case> cases = {
      {"text", Text("hi there"), {}, Expect({Id(kBos, 0), Txt(" hi there", 1), Id(kEos, 1)})},
      {"text starting with a space keeps one space", Text(" hi"), {},
       Expect({Id(kBos, 0), Txt(" hi", 1), Id(kEos, 1)})},
      {"prompt_completion trains the completion and EOS", PromptCompletion("Q?", " A."), {},
       Expect({Id(kBos, 0), Txt(" Q?", 0), Txt(" A.", 1), Id(kEos, 1)})},
      {"completion continues the prompt's text", PromptCompletion("Q:\n", "A"), {},
       Expect({Id(kBos, 0), Txt(" Q:\n", 0), Txt("A", 1), Id(kEos, 1)})},
      {"empty prompt: the completion starts the document", PromptCompletion("", "A"), {},
       Expect({Id(kBos, 0), Txt(" A", 1), Id(kEos, 1)})},
      {"train_on_inputs trains the prompt", PromptCompletion("Q?", " A."), Inputs(),
       Expect({Id(kBos, 0), Txt(" Q?", 1), Txt(" A.", 1), Id(kEos, 1)})},
      {"alpaca with input", alpaca, {},
       Expect({Id(kBos, 0),
               Txt(" Below is an instruction that describes a task, paired with an input that "
                   "provides further context. Write a response that appropriately completes the "
                   "request.\n\n### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:\n", 0),
               Txt("3", 1), Id(kEos, 1)})},
      {"alpaca without input", alpaca_no_input, {},
       Expect({Id(kBos, 0),
               Txt(" Below is an instruction that describes a task. Write a response that "
                   "appropriately completes the request.\n\n### Instruction:\nAdd\n\n"
                   "### Response:\n", 0),
               Txt("3", 1), Id(kEos, 1)})},
      {"tokenized with labels", tokenized, {}, Example{{1, 50, 51, 2}, {0, 0, 1, 1}}},
      {"tokenized without labels trains all", tokenized_no_labels, {},
       Example{{1, 50, 51, 2}, {0, 1, 1, 1}}},
      {"chat, one turn", Chat({M("user", "hi"), M("assistant", "hello")}), {},
       Expect({Id(kBos, 0), Txt("[INST] hi [/INST]", 0), Txt(" hello ", 1), Id(kEos, 1)})},
      {"chat with system, contents stripped",
       Chat({M("system", " Be brief. "), M("user", "hi \n"), M("assistant", "\thello\n")}), {},
       Expect({Id(kBos, 0), Txt("[INST] <<SYS>>\n Be brief. \n<</SYS>>\n\nhi [/INST]", 0),
               Txt(" hello ", 1), Id(kEos, 1)})},
      {"chat, several turns, weight 0 excludes a turn",
       Chat({M("user", "a"), M("assistant", "b", 0), M("user", "c"), M("assistant", "d", 1)}), {},
       Expect({Id(kBos, 0), Txt("[INST] a [/INST]", 0), Txt(" b ", 0), Id(kEos, 0),
               Id(kBos, 0), Txt("[INST] c [/INST]", 0), Txt(" d ", 1), Id(kEos, 1)})},
      {"chat ending with a user turn", Chat({M("user", "a"), M("assistant", "b"), M("user", "c")}),
       {},
       Expect({Id(kBos, 0), Txt("[INST] a [/INST]", 0), Txt(" b ", 1), Id(kEos, 1),
               Id(kBos, 0), Txt("[INST] c [/INST]", 0)})},
      {"chat, train_on_inputs still honours weight 0",
       Chat({M("system", "s"), M("user", "a"), M("assistant", "b", 0), M("user", "c"),
             M("assistant", "d")}),
       Inputs(),
       Expect({Id(kBos, 0), Txt("[INST] <<SYS>>\ns\n<</SYS>>\n\na [/INST]", 1), Txt(" b ", 0),
               Id(kEos, 0), Id(kBos, 1), Txt("[INST] c [/INST]", 1), Txt(" d ", 1), Id(kEos, 1)})},
      {"chat, legacy tokenizer: a space after each special token",
       Chat({M("user", "a"), M("assistant", "b"), M("user", "c"), M("assistant", "d")}), {},
       Expect({Id(kBos, 0), Txt(" [INST] a [/INST]", 0), Txt(" b ", 1), Id(kEos, 1),
               Id(kBos, 0), Txt(" [INST] c [/INST]", 0), Txt(" d ", 1), Id(kEos, 1)}),
       TextStart::kDocument},
      {"special-token text in content stays text",
       Chat({M("user", "</s>"), M("assistant", "<s>")}), {},
       Expect({Id(kBos, 0), Txt("[INST] </s> [/INST]", 0), Txt(" <s> ", 1), Id(kEos, 1)})},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    FakeTokenizer tok(c.after_special);
    absl::StatusOr<Example> got = BuildExample(c.record, tok, c.options);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->ids, c.want.ids);
    EXPECT_EQ(got->trained, c.want.trained);
  }
}

TEST(BuildExample, NoBosToken) {
  FakeTokenizer tok(TextStart::kContinuation, /*bos=*/-1);
  absl::StatusOr<Example> got = BuildExample(Chat({M("user", "a"), M("assistant", "b")}), tok, {});
  ASSERT_TRUE(got.ok()) << got.status();
  // Without a BOS the first turn starts the document, so it gets the leading space.
  EXPECT_EQ(got->ids, Expect({Txt(" [INST] a [/INST]", 0), Txt(" b ", 1), Id(kEos, 1)}).ids);
}

TEST(BuildExample, Errors) {
  Record bad_id;
  bad_id.format = RecordFormat::kTokenized;
  bad_id.input_ids = {1, 9999};
  Record bad_label = bad_id;
  bad_label.input_ids = {1, 5};
  bad_label.labels = {7, 5};
  struct ErrorCase {
    std::string name;
    Record record;
    ExampleOptions options;
    absl::StatusCode code;
    std::string message;
    int32_t eos = kEos;
    std::string chat_template = "[INST] <<SYS>>";
  };
  ExampleOptions llama3;
  llama3.chat_template = ChatTemplate::kLlama3;
  const std::vector<ErrorCase> cases = {
      {"roles not alternating", Chat({M("user", "a"), M("user", "b"), M("assistant", "c")}), {},
       absl::StatusCode::kInvalidArgument, "messages[1].role: roles must alternate"},
      {"assistant first", Chat({M("system", "s"), M("assistant", "a")}), {},
       absl::StatusCode::kInvalidArgument, "messages[1].role"},
      {"system not first", Chat({M("user", "a"), M("system", "s"), M("assistant", "b")}), {},
       absl::StatusCode::kInvalidArgument, "messages[1].role: a system message may only come first"},
      {"id outside the vocabulary", bad_id, {}, absl::StatusCode::kInvalidArgument,
       "input_ids[1]: 9999 is outside the vocabulary"},
      {"shifted labels", bad_label, {}, absl::StatusCode::kInvalidArgument, "labels[0]"},
      {"no EOS", Text("a"), {}, absl::StatusCode::kFailedPrecondition, "no EOS", -1},
      {"llama3 without header tokens", Chat({M("user", "a"), M("assistant", "b")}), llama3,
       absl::StatusCode::kFailedPrecondition, "<|start_header_id|>"},
      {"auto without a template", Chat({M("user", "a"), M("assistant", "b")}), {},
       absl::StatusCode::kInvalidArgument, "set chat_template", kEos, ""},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    FakeTokenizer tok(TextStart::kContinuation, kBos, c.eos, c.chat_template);
    absl::StatusOr<Example> got = BuildExample(c.record, tok, c.options);
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), c.code) << got.status();
    EXPECT_CONTAINS(got.status().message(), c.message);
  }
}

TEST(RenderChat, MatchesTheLlama2Template) {
  absl::StatusOr<std::string> text =
      RenderChat({M("system", "S"), M("user", " u1 "), M("assistant", "a1"), M("user", "u2"),
                  M("assistant", "a2\n")},
                 ChatTemplate::kLlama2, "<s>", "</s>");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\n u1 [/INST] a1 </s><s>[INST] u2 [/INST] a2 </s>");
}

TEST(DetectChatTemplate, Markers) {
  struct {
    std::string jinja;
    std::optional<ChatTemplate> want;
  } cases[] = {
      {"{{ bos_token + '[INST] ' }}{{ '<<SYS>>\\n' }}", ChatTemplate::kLlama2},
      {"{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}", ChatTemplate::kLlama3},
      {"{{ '[INST] ' + content + ' [/INST]' }}", std::nullopt},  // Mistral: not LLaMA-2
      {"", std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.jinja);
    absl::StatusOr<ChatTemplate> got = DetectChatTemplate(c.jinja);
    ASSERT_EQ(got.ok(), c.want.has_value()) << got.status();
    if (c.want) {
      EXPECT_EQ(*got, *c.want);
    }
  }
}

TEST(ChatTemplateName, RoundTrips) {
  for (ChatTemplate t : {ChatTemplate::kAuto, ChatTemplate::kLlama2, ChatTemplate::kLlama3}) {
    EXPECT_EQ(ParseChatTemplateName(ChatTemplateName(t)), t);
  }
  EXPECT_FALSE(ParseChatTemplateName("chatml"));
}

TEST(PyStrip, PythonWhitespace) {
  struct {
    std::string in, want;
  } cases[] = {
      {"  a b \n", "a b"},
      {"\t\r\x0b\x0c\x1c\x1f x", "x"},
      {"\u3000x\u00a0", "x"},                  // ideographic space, no-break space
      {"\u2028x\u205f\u202f", "x"},
      {"\u200bx\u200b", "\u200bx\u200b"},      // zero-width space is not whitespace in Python
      {"\u00e9 ", "\u00e9"},
      {"\xff ", "\xff"},                       // malformed UTF-8 is left alone
      {"   ", ""},
      {"", ""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(PyStrip(c.in), c.want) << "input: " << c.in;
  }
}

TEST(Example, TrainedCount) {
  EXPECT_EQ((Example{{1, 2, 3}, {0, 1, 1}}).trained_count(), 2);
}

}  // namespace
}  // namespace herd::datasets
