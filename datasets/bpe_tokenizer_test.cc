// The byte-level BPE tokenizer over a hand-made tokenizer.json (merge order, special-token
// policy, decoding, configuration errors) and the LLaMA-3 chat template over it. Parity with
// Hugging Face on a trained vocabulary is tests/python/bpe_parity.py.
#include "datasets/bpe_tokenizer.h"

#include <string>
#include <vector>

#include "datasets/bpe_pretokenizer.h"
#include "datasets/examples.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

using nlohmann::json;

#define EXPECT_CONTAINS(text, sub)                                         \
  EXPECT_NE(std::string(text).find(sub), std::string::npos) \
      << "expected \"" << (sub) << "\" in: " << (text)

// GPT-2's bytes_to_unicode, written independently of the implementation: the UTF-8 spelling of
// byte b in tokenizer.json.
std::string Spell(uint8_t b) {
  int n = 0;
  for (int x = 0; x < 256; ++x) {
    const bool printable = (x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || x >= 0xae;
    if (x == b) {
      const char32_t cp = printable ? static_cast<char32_t>(x) : 0x100 + n;
      std::string s;
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {
        s += static_cast<char>(0xc0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3f));
      }
      return s;
    }
    if (!printable) ++n;
  }
  return "";
}
std::string Spell(std::string_view bytes) {
  std::string s;
  for (char c : bytes) s += Spell(static_cast<uint8_t>(c));
  return s;
}

constexpr int32_t kSpaceA = 256, kAB = 257, kABC = 258, kBOS = 300, kEOT = 301, kHeader = 302,
                  kEndHeader = 303, kTool = 304;

// Byte b is id b; merges (" ", "a"), ("a", "b"), ("ab", "c") in that rank order.
json MakeJson(bool pair_merges = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[Spell(static_cast<uint8_t>(b))] = b;
  vocab[Spell(" a")] = kSpaceA;
  vocab[Spell("ab")] = kAB;
  vocab[Spell("abc")] = kABC;
  json merges = json::array();
  for (auto [l, r] : {std::pair{" ", "a"}, {"a", "b"}, {"ab", "c"}}) {
    if (pair_merges) {
      merges.push_back({Spell(l), Spell(r)});
    } else {
      merges.push_back(Spell(l) + " " + Spell(r));
    }
  }
  json added = json::array();
  for (auto [id, content, special] :
       {std::tuple{kBOS, "<|begin_of_text|>", true}, {kEOT, "<|eot_id|>", true},
        {kHeader, "<|start_header_id|>", true}, {kEndHeader, "<|end_header_id|>", true},
        {kTool, "<tool>", false}}) {
    added.push_back({{"id", id}, {"content", content}, {"special", special}});
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"},
               {"pattern", {{"Regex", std::string(kLlama3SplitPattern)}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"},
               {"add_prefix_space", false},
               {"trim_offsets", true},
               {"use_regex", false}}}}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", false}}}};
}

TokenizerConfig Config() {
  TokenizerConfig c;
  c.present = true;
  c.bos_token = "<|begin_of_text|>";
  c.eos_token = "<|eot_id|>";
  c.chat_template = "{{ '<|start_header_id|>' }}";
  return c;
}

std::unique_ptr<Tokenizer> Make(const json& j, TokenizerConfig config = Config()) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = MakeBpeTokenizer(j.dump(), config, "t.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::vector<int32_t> Bytes(std::string_view s) {
  std::vector<int32_t> ids;
  for (char c : s) ids.push_back(static_cast<uint8_t>(c));
  return ids;
}
std::vector<int32_t> Cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(BpeTokenizer, EncodesByMergeRank) {
  for (bool pairs : {false, true}) {
    SCOPED_TRACE(pairs ? "[a, b] merges" : "\"a b\" merges");
    std::unique_ptr<Tokenizer> t = Make(MakeJson(pairs));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->info().kind, "bpe");
    EXPECT_EQ(t->vocab_size(), kTool + 1);
    EXPECT_EQ(t->bos_id(), kBOS);
    EXPECT_EQ(t->eos_id(), kEOT);
    EXPECT_EQ(t->info().special_tokens.at("<|start_header_id|>"), kHeader);
    struct Case {
      std::string text;
      std::vector<int32_t> want;
    };
    const Case cases[] = {
        {"ab", {kAB}},
        {"abc", {kABC}},
        // (" ", "a") outranks ("a", "b"), and (" a", "b") is no merge.
        {" abc", Cat({{kSpaceA}, Bytes("bc")})},
        {"abab", Cat({{kAB}, {kAB}})},
        {"x ab", Cat({Bytes("x"), {kSpaceA}, Bytes("b")})},
        {"caf\u00e9", Bytes("caf\u00e9")},
        // Special tokens are never made from text; the non-special added token is.
        {"<|eot_id|>", Bytes("<|eot_id|>")},
        {"ab<tool>ab", Cat({{kAB}, {kTool}, {kAB}})},
        {"", {}},
    };
    for (const Case& c : cases) {
      SCOPED_TRACE(c.text);
      absl::StatusOr<std::vector<int32_t>> got = t->Encode(c.text, TextStart::kDocument);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, c.want);
      absl::StatusOr<std::string> back = t->Decode(*got);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_EQ(*back, c.text);
    }
  }
}

TEST(BpeTokenizer, IgnoreMergesTakesWholePieces) {
  json j = MakeJson();
  j["model"]["vocab"][Spell(" abc")] = 259;  // reachable only by whole-piece lookup
  j["model"]["ignore_merges"] = true;
  std::unique_ptr<Tokenizer> t = Make(j);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(*t->Encode(" abc", TextStart::kDocument), std::vector<int32_t>{259});
}

TEST(BpeTokenizer, Decode) {
  std::unique_ptr<Tokenizer> t = Make(MakeJson());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(*t->Decode({{kBOS, kAB, kEOT, kTool}}), "ab<tool>");  // specials decode to nothing
  // A cut-off UTF-8 sequence decodes as U+FFFD, as Hugging Face's from_utf8_lossy does.
  EXPECT_EQ(*t->Decode({{0xe6, 0x9d, 'a', 0xff}}), "\xef\xbf\xbd" "a" "\xef\xbf\xbd");
  EXPECT_FALSE(t->Decode({{kTool + 1}}).ok());
  EXPECT_FALSE(t->Decode({{280}}).ok());  // inside the range but no such token
}

TEST(BpeTokenizer, TokenBytes) {
  std::unique_ptr<Tokenizer> t = Make(MakeJson());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(*t->TokenBytes(kAB), "ab");
  EXPECT_EQ(*t->TokenBytes(0xe6), "\xe6");  // a byte token: the byte, not U+FFFD
  EXPECT_EQ(*t->TokenBytes(kEOT), "<|eot_id|>");  // special tokens are spelled out
  EXPECT_FALSE(t->TokenBytes(280).ok());
  EXPECT_FALSE(t->TokenBytes(-1).ok());
}

TEST(BpeTokenizer, Errors) {
  struct Case {
    std::string name;
    std::function<void(json&, TokenizerConfig&)> edit;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"GPT-2 pre-tokenizer",
       [](json& j, TokenizerConfig&) {
         j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"use_regex", true}};
       },
       absl::StatusCode::kUnimplemented, "pre_tokenizer"},
      {"another split regex",
       [](json& j, TokenizerConfig&) {
         j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+";
       },
       absl::StatusCode::kUnimplemented, "LLaMA 3's regex"},
      {"normalizer", [](json& j, TokenizerConfig&) { j["normalizer"] = {{"type", "NFC"}}; },
       absl::StatusCode::kUnimplemented, "normalizer"},
      {"WordPiece", [](json& j, TokenizerConfig&) { j["model"]["type"] = "WordPiece"; },
       absl::StatusCode::kUnimplemented, "model.type"},
      {"merge of an unknown token",
       [](json& j, TokenizerConfig&) { j["model"]["merges"].push_back("zz q"); },
       absl::StatusCode::kInvalidArgument, "model.merges[3]"},
      {"bad merge", [](json& j, TokenizerConfig&) { j["model"]["merges"].push_back(3); },
       absl::StatusCode::kInvalidArgument, "model.merges[3]"},
      {"unknown bos", [](json&, TokenizerConfig& c) { c.bos_token = "<s>"; },
       absl::StatusCode::kInvalidArgument, "bos_token '<s>'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    json j = MakeJson();
    TokenizerConfig config = Config();
    c.edit(j, config);
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = MakeBpeTokenizer(j.dump(), config, "t.json");
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), c.code) << t.status();
    EXPECT_CONTAINS(t.status().message(), c.message);
  }
  EXPECT_EQ(MakeBpeTokenizer("{", Config(), "t.json").status().code(),
            absl::StatusCode::kInvalidArgument);
}

Message M(std::string role, std::string content, std::optional<int> weight = std::nullopt) {
  return Message{std::move(role), std::move(content), weight};
}

TEST(Llama3Chat, RendersMetasFormat) {
  absl::StatusOr<std::string> text =
      RenderChat({M("system", " S "), M("user", "u\n"), M("assistant", "\ta")},
                 ChatTemplate::kLlama3, "<|begin_of_text|>", "<|eot_id|>");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nu<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\na<|eot_id|>");
}

TEST(Llama3Chat, TrainsAssistantContentAndEndOfTurn) {
  std::unique_ptr<Tokenizer> t = Make(MakeJson());
  ASSERT_NE(t, nullptr);
  Record r;
  r.format = RecordFormat::kChat;
  r.messages = {M("user", " ab "), M("assistant", "abc"), M("user", "<|eot_id|>"),
                M("assistant", "ab", 0)};
  for (bool train_on_inputs : {false, true}) {
    SCOPED_TRACE(train_on_inputs ? "train_on_inputs" : "default");
    ExampleOptions options;  // kAuto: detected from the config's template
    options.train_on_inputs = train_on_inputs;
    absl::StatusOr<Example> ex = BuildExample(r, *t, options);
    ASSERT_TRUE(ex.ok()) << ex.status();
    const bool in = train_on_inputs;
    std::vector<int32_t> ids;
    std::vector<uint8_t> trained;
    const auto add = [&](std::vector<int32_t> part, bool tr) {
      ids.insert(ids.end(), part.begin(), part.end());
      trained.insert(trained.end(), part.size(), tr ? 1 : 0);
    };
    const auto turn = [&](std::string role, std::vector<int32_t> content, bool header, bool body) {
      add({kHeader}, header);
      add(Bytes(role), header);
      add({kEndHeader}, header);
      add(Bytes("\n\n"), header);
      add(content, body);
      add({kEOT}, body);
    };
    add({kBOS}, false);
    turn("user", {kAB}, in, in);
    turn("assistant", {kABC}, in, true);
    turn("user", Bytes("<|eot_id|>"), in, in);
    turn("assistant", {kAB}, in, false);  // weight 0
    trained[0] = 0;
    EXPECT_EQ(ex->ids, ids);
    EXPECT_EQ(ex->trained, trained);
  }
}

}  // namespace
}  // namespace herd::datasets
