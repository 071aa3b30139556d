// Model directory scanning: good directories, sharded ones, and each broken case named.
#include "trainer/agent/model_scan.h"

#include <filesystem>

#include "common/file_util.h"
#include "gtest/gtest.h"

namespace herd::agent {
namespace {
namespace fs = std::filesystem;

constexpr char kConfig[] =
    R"({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 2048})";

std::string MakeModel(const std::string& root, const std::string& name, const std::string& config,
                      bool weights = true, bool tokenizer = true) {
  std::string dir = root + "/" + name;
  fs::create_directories(dir);
  EXPECT_TRUE(WriteFileAtomic(dir + "/config.json", config).ok());
  if (weights) {
    EXPECT_TRUE(WriteFileAtomic(dir + "/model.safetensors", "x").ok());
  }
  if (tokenizer) {
    EXPECT_TRUE(WriteFileAtomic(dir + "/tokenizer.model", "x").ok());
  }
  return dir;
}

std::string FreshRoot(const std::string& name) {
  std::string root = ::testing::TempDir() + "/model_scan_" + name;
  fs::remove_all(root);
  fs::create_directories(root);
  return root;
}

TEST(ModelScanTest, FindsModelsSortedAndSkipsOtherFolders) {
  std::string root = FreshRoot("ok");
  MakeModel(root, "zeta", kConfig);
  MakeModel(root, "alpha", kConfig);
  fs::create_directories(root + "/not-a-model");
  auto models = ScanModels(root);
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].name, "alpha");
  EXPECT_EQ((*models)[0].num_kv_heads, 2);
  EXPECT_EQ((*models)[0].tokenizer, "sentencepiece");
  EXPECT_EQ((*models)[1].weight_files, std::vector<std::string>{"model.safetensors"});
}

TEST(ModelScanTest, ReadsShardedIndex) {
  std::string root = FreshRoot("sharded");
  std::string dir = MakeModel(root, "big", kConfig, /*weights=*/false);
  ASSERT_TRUE(WriteFileAtomic(dir + "/a.safetensors", "x").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/b.safetensors", "x").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/model.safetensors.index.json",
                              R"({"weight_map": {"t1": "b.safetensors", "t2": "a.safetensors", "t3": "a.safetensors"}})")
                  .ok());
  auto m = ReadModelDir(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->weight_files, (std::vector<std::string>{"a.safetensors", "b.safetensors"}));
}

TEST(ModelScanTest, BrokenModelsAreNamed) {
  struct Case {
    const char* config;
    bool weights, tokenizer;
    const char* want;
  };
  const Case kCases[] = {
      {"{", true, true, "config.json: not a JSON object"},
      {R"({"model_type": "gpt2"})", true, true, "model_type is 'gpt2'"},
      {R"({"model_type": "llama", "hidden_size": 64})", true, true, "num_hidden_layers is missing"},
      {R"({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": -1})", true, true,
       "hidden_size must be a positive integer"},
      {R"({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
           "num_key_value_heads": 3, "vocab_size": 10})",
       true, true, "multiple of num_key_value_heads"},
      {kConfig, true, false, "neither tokenizer.json nor tokenizer.model"},
      {kConfig, false, true, "pickled weights are not read"},
  };
  int i = 0;
  for (const Case& c : kCases) {
    std::string root = FreshRoot("bad" + std::to_string(i++));
    MakeModel(root, "m", c.config, c.weights, c.tokenizer);
    auto models = ScanModels(root);
    ASSERT_FALSE(models.ok()) << c.want;
    EXPECT_NE(std::string(models.status().message()).find(c.want), std::string::npos) << models.status();
  }
  EXPECT_EQ(ScanModels("/nonexistent/models").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace herd::agent
