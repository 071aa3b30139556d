// Tests of TrainerStore: registrations, transitions and published models.
#include "coordinator/store/trainer_store.h"

#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::MessageHas;

class TrainerStoreTest : public testing::StoreTest {
 protected:
  TrainerStore& trainers() { return store_->trainers(); }
  static TrainerRecord Trainer(const std::string& name) {
    TrainerRecord t;
    t.name = name;
    t.state = "IDLE";
    t.device = DeviceRecord{"CUDA", "NVIDIA H100 80GB HBM3", 0, int64_t{80} << 30};
    t.metrics_address = "127.0.0.1:9401";
    t.agent_version = "0.1.0";
    t.engine_version = "0.1.0";
    t.models = {"tiny-llama"};
    return t;
  }
  ModelRecord Model(const std::string& name, const std::string& config = "{\"hidden_size\": 64}") {
    ModelRecord m;
    m.name = name;
    m.weights_sha256 = std::string(64, 'f');
    m.weights_size_bytes = 1000;
    m.files = {NamedBlob{"config.json", *store_->blobs().Put(config)},
               NamedBlob{"tokenizer.json", *store_->blobs().Put("{\"model\": {}}")}};
    return m;
  }
};

TEST_F(TrainerStoreTest, RegisterKeepsTheIdPerName) {
  auto first = trainers().Register(Trainer("gpu-node-3-cuda0"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->id.substr(0, 3), "tr_");
  EXPECT_EQ(first->register_time, clock_.Now());
  EXPECT_EQ(first->device, Trainer("x").device);
  clock_.Advance(absl::Minutes(5));
  TrainerRecord changed = Trainer("gpu-node-3-cuda0");
  changed.models = {"tiny-llama", "llama-3.2-1b"};
  changed.agent_version = "0.2.0";
  auto again = trainers().Register(changed);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id, first->id);
  EXPECT_EQ(again->models, changed.models);
  EXPECT_EQ(again->agent_version, "0.2.0");
  EXPECT_EQ(again->register_time, clock_.Now());
  EXPECT_NE(trainers().Register(Trainer("other"))->id, first->id);
  EXPECT_EQ(trainers().List()->size(), 2u);
  EXPECT_EQ(trainers().GetByName("gpu-node-3-cuda0")->id, first->id);
  EXPECT_EQ(trainers().Get(first->id)->name, "gpu-node-3-cuda0");
  HERD_EXPECT_CODE(trainers().Get("tr_missing").status(), kNotFound);
  HERD_EXPECT_CODE(trainers().GetByName("missing").status(), kNotFound);
}

TEST_F(TrainerStoreTest, RegisterTakesTheRegistryIdForANewName) {
  TrainerRecord t = Trainer("cpu-a");
  t.id = "tr_from_registry";
  auto first = trainers().Register(t);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->id, "tr_from_registry");
  t.id = "tr_something_else";  // a known name keeps the id it has
  EXPECT_EQ(trainers().Register(t)->id, "tr_from_registry");
}

TEST_F(TrainerStoreTest, RegisterErrors) {
  TrainerRecord t = Trainer("a/b");
  HERD_EXPECT_CODE(trainers().Register(t).status(), kInvalidArgument);
  t = Trainer("ok");
  t.device.kind = "TPU";
  HERD_EXPECT_CODE(trainers().Register(t).status(), kInvalidArgument);
  t = Trainer("ok");
  t.models = {".."};
  HERD_EXPECT_CODE(trainers().Register(t).status(), kInvalidArgument);
}

TEST_F(TrainerStoreTest, SetStateRecordsTransitions) {
  auto t = trainers().Register(Trainer("n1"));
  absl::Time seen = clock_.Now() + absl::Seconds(30);
  HERD_ASSERT_OK(trainers().SetState(t->id, "LOST", seen));
  auto got = trainers().Get(t->id);
  EXPECT_EQ(got->state, "LOST");
  EXPECT_EQ(got->last_seen_time, seen);
  HERD_EXPECT_CODE(trainers().SetState("tr_missing", "LOST", seen), kNotFound);
}

TEST_F(TrainerStoreTest, Models) {
  auto m = trainers().PutModel(Model("tiny-llama"), false);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->files.size(), 2u);
  EXPECT_EQ(m->create_time, clock_.Now());
  EXPECT_TRUE(trainers().PutModel(Model("tiny-llama"), false).ok()) << "same: unchanged";
  auto differ = trainers().PutModel(Model("tiny-llama", "{\"hidden_size\": 128}"), false);
  HERD_EXPECT_CODE(differ.status(), kFailedPrecondition);
  EXPECT_TRUE(MessageHas(differ.status(), "files")) << differ.status();
  ModelRecord new_weights = Model("tiny-llama");
  new_weights.weights_sha256 = std::string(64, 'e');
  auto weights = trainers().PutModel(new_weights, false);
  EXPECT_TRUE(MessageHas(weights.status(), "weights")) << weights.status();
  clock_.Advance(absl::Hours(1));
  auto replaced = trainers().PutModel(new_weights, true);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(replaced->weights_sha256, new_weights.weights_sha256);
  EXPECT_EQ(replaced->update_time, clock_.Now());
  EXPECT_LT(replaced->create_time, replaced->update_time);
  ASSERT_TRUE(trainers().PutModel(Model("another"), false).ok());
  auto all = trainers().ListModels();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ(all->at(0).name, "another");
  HERD_EXPECT_CODE(trainers().GetModel("missing").status(), kNotFound);

  ModelRecord bad = Model("x");
  bad.files[0].blob.sha256 = std::string(64, '1');
  HERD_EXPECT_CODE(trainers().PutModel(bad, false).status(), kFailedPrecondition);
  bad = Model("x");
  bad.weights_sha256 = "short";
  HERD_EXPECT_CODE(trainers().PutModel(bad, false).status(), kInvalidArgument);
  bad = Model("x");
  bad.files[1].name = "config.json";
  HERD_EXPECT_CODE(trainers().PutModel(bad, false).status(), kInvalidArgument);
  HERD_EXPECT_CODE(trainers().PutModel(Model("a/b"), false).status(), kInvalidArgument);
}

}  // namespace
}  // namespace herd::coordinator::store
