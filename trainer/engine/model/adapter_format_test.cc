// adapter_config.json round trips and refusals, and ValidateAdapterDir on good and broken
// adapter directories (torch-free code; PEFT itself is exercised by tests/python/adapter_parity.py).
#include "trainer/engine/model/adapter_format.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/strings.h"

namespace herd::engine {
namespace {

namespace fs = std::filesystem;

TEST(ParseTargetModules, ExpandsAndOrders) {
  auto all = ParseTargetModules({"all-linear"});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), kNumProj);
  auto some = ParseTargetModules({"v_proj", "q_proj", "v_proj"});
  ASSERT_TRUE(some.ok()) << some.status();
  EXPECT_EQ(*some, (std::vector<Proj>{Proj::kQ, Proj::kV}));
  auto bad = ParseTargetModules({"q_proj", "lm_head"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("lm_head"), std::string_view::npos) << bad.status();
  EXPECT_FALSE(ParseTargetModules({}).ok());
}

TEST(AdapterConfigJson, RoundTrips) {
  AdapterConfig c;
  c.r = 4;
  c.alpha = 12.5;
  c.dropout = 0.1;
  c.rslora = true;
  c.targets = {Proj::kK, Proj::kDown};
  c.base_model_name_or_path = "tiny-llama";
  auto back = ParseAdapterConfig(AdapterConfigJson(c), "test");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->r, 4);
  EXPECT_EQ(back->alpha, 12.5);
  EXPECT_EQ(back->dropout, 0.1);
  EXPECT_TRUE(back->rslora);
  EXPECT_EQ(back->targets, c.targets);
  EXPECT_EQ(back->base_model_name_or_path, "tiny-llama");
  // An integral alpha is written as an integer, as PEFT declares it.
  c.alpha = 32;
  EXPECT_NE(AdapterConfigJson(c).find("\"lora_alpha\": 32,"), std::string::npos) << AdapterConfigJson(c);
}

TEST(ParseAdapterConfig, RefusesWhatHerdCannotReproduce) {
  const std::string good = R"("peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"])";
  // PEFT's own nulls and empty maps are fine.
  EXPECT_TRUE(ParseAdapterConfig(herd::StrCat("{", good, R"(, "task_type": null, "rank_pattern": {}, )",
                                              R"("modules_to_save": null, "use_dora": false, "bias": "none"})"),
                                 "ok")
                  .ok());
  const std::pair<std::string, std::string> cases[] = {
      {R"({"peft_type": "IA3", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]})", "peft_type"},
      {R"({"peft_type": "LORA", "r": 0, "lora_alpha": 16, "target_modules": ["q_proj"]})", "r"},
      {R"({"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]})", "lora_alpha"},
      {R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ".*q_proj"})", "target_modules"},
      {R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["qkv"]})", "qkv"},
      {herd::StrCat("{", good, R"(, "use_dora": true})"), "use_dora"},
      {herd::StrCat("{", good, R"(, "bias": "all"})"), "bias"},
      {herd::StrCat("{", good, R"(, "fan_in_fan_out": true})"), "fan_in_fan_out"},
      {herd::StrCat("{", good, R"(, "rank_pattern": {"q_proj": 4}})"), "rank_pattern"},
      {herd::StrCat("{", good, R"(, "modules_to_save": ["lm_head"]})"), "modules_to_save"},
      {herd::StrCat("{", good, R"(, "task_type": "SEQ_CLS"})"), "task_type"},
      {"[1]", "not a JSON object"},
  };
  for (const auto& [json, what] : cases) {
    auto c = ParseAdapterConfig(json, "adapter_config.json");
    ASSERT_FALSE(c.ok()) << json;
    EXPECT_NE(c.status().message().find(what), std::string_view::npos) << c.status();
  }
}

LlamaConfig TinyConfig() {
  LlamaConfig c;
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  return c;
}

// An adapter directory: config for r=2 on q_proj and down_proj, then `edit` on the tensors.
struct Entry {
  Dtype dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
void WriteAdapter(const fs::path& dir, const std::function<void(std::map<std::string, Entry>&)>& edit) {
  fs::create_directories(dir);
  AdapterConfig c;
  c.r = 2;
  c.targets = {Proj::kQ, Proj::kDown};
  ASSERT_TRUE(WriteFileAtomic((dir / kAdapterConfigFile).string(), AdapterConfigJson(c)).ok());
  std::map<std::string, Entry> tensors;
  for (const AdapterTensorSpec& spec : AdapterTensorSpecs(TinyConfig(), c)) {
    std::vector<float> values(spec.shape[0] * spec.shape[1], 0.25f);
    tensors[spec.name] = {Dtype::kF32, spec.shape,
                          std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float))};
  }
  edit(tensors);
  SafetensorsWriter writer;
  for (auto& [name, e] : tensors) ASSERT_TRUE(writer.Add(name, e.dtype, e.shape, e.bytes).ok()) << name;
  ASSERT_TRUE(writer.Write((dir / kAdapterWeightsFile).string()).ok());
}

TEST(ValidateAdapterDir, AcceptsGoodAndNamesTheBrokenTensor) {
  const fs::path root = fs::temp_directory_path() / herd::StrCat("herd_adapter_format_", getpid());
  fs::remove_all(root);
  const std::string a0 = PeftLoraName(0, Proj::kQ, false), b1 = PeftLoraName(1, Proj::kDown, true);
  struct Case {
    std::string name;
    std::function<void(std::map<std::string, Entry>&)> edit;
    std::string want;  // "" = valid; else a substring of the error, besides the file name
  };
  const float nan = std::nanf(""), inf = INFINITY;
  const Case cases[] = {
      {"good", [](auto&) {}, ""},
      {"missing", [&](auto& t) { t.erase(b1); }, b1},
      {"unexpected", [&](auto& t) { t[PeftLoraName(0, Proj::kK, false)] = t[a0]; }, PeftLoraName(0, Proj::kK, false)},
      {"shape",
       [&](auto& t) {
         t[a0].shape = {4, 4};
       },
       a0},
      {"nan", [&](auto& t) { std::memcpy(t[a0].bytes.data() + 12, &nan, 4); }, a0},
      {"inf", [&](auto& t) { std::memcpy(t[b1].bytes.data(), &inf, 4); }, b1},
      {"bf16_inf",
       [&](auto& t) {
         t[b1].dtype = Dtype::kBF16;
         t[b1].bytes.resize(t[b1].bytes.size() / 2);
         t[b1].bytes[1] = static_cast<char>(0x7F);
         t[b1].bytes[0] = static_cast<char>(0x80);
       },
       b1},
      {"int", [&](auto& t) { t[a0].dtype = Dtype::kI32; }, "dtype I32"},
  };
  for (const Case& c : cases) {
    const fs::path dir = root / c.name;
    WriteAdapter(dir, c.edit);
    if (HasFatalFailure()) return;
    auto result = ValidateAdapterDir(dir.string(), TinyConfig());
    if (c.want.empty()) {
      ASSERT_TRUE(result.ok()) << c.name << ": " << result.status();
      EXPECT_EQ(result->r, 2);
      continue;
    }
    ASSERT_FALSE(result.ok()) << c.name;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(result.status().message().find(c.want), std::string_view::npos) << c.name << ": " << result.status();
    EXPECT_NE(std::string(result.status().message()).find(kAdapterWeightsFile), std::string::npos) << result.status();
  }
  auto missing = ValidateAdapterDir((root / "nowhere").string(), TinyConfig());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  fs::remove_all(root);
}

}  // namespace
}  // namespace herd::engine
