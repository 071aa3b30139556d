// TrainerService and ClusterService through a real gRPC server on 127.0.0.1 (port 0), in
// process: registration with the missing-files round trip, heartbeats and assignments, listings,
// rendezvous, and the token rules.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "coordinator/clock.h"
#include "coordinator/job_control.h"
#include "coordinator/preparation.h"
#include "coordinator/registry.h"
#include "coordinator/rendezvous.h"
#include "coordinator/scheduler.h"
#include "coordinator/services/cluster_service.h"
#include "coordinator/services/trainer_service.h"
#include "coordinator/store/store.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"
#include "herd/v1/cluster.grpc.pb.h"
#include "herd/v1/trainers.grpc.pb.h"

namespace herd::coordinator::services {
namespace {

namespace v1 = herd::v1;
using store::testing::TempDir;

constexpr char kClusterToken[] = "cluster-token-for-tests-0123456789abcdef";

const std::string kConfigJson = R"({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2,
  "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
  "vocab_size": 256, "max_position_embeddings": 512, "rope_theta": 500000.0})";
const std::string kTokenizerJson = R"({"model": {"type": "BPE"}})";
const std::string kPreparedBytes(3 << 20, 'p');  // three and a bit chunks of FetchBlob

class TrainerServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = store::Store::Open({.data_dir = dir_.path() + "/data", .clock = &clock_});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    ASSERT_TRUE(store_->tokens().ImportToken(store::TokenKind::kCluster, "", kClusterToken, "agents").ok());
    ASSERT_TRUE(store_->tokens().EnsureTenant("acme").ok());
    auto user = store_->tokens().CreateUserToken("acme", "alice");
    ASSERT_TRUE(user.ok()) << user.status();
    user_token_ = user->token;

    registry_ = *TrainerRegistry::Create({}, &clock_);
    rendezvous_ = *RendezvousStore::Create();
    scheduler_ = *Scheduler::Create({}, registry_.get(), rendezvous_.get(), &clock_);
    trainer_service_ = std::make_unique<TrainerService>(store_.get(), scheduler_.get(), rendezvous_.get());
    cluster_service_ = std::make_unique<ClusterService>(store_.get(), scheduler_.get(), registry_.get());
    auto server = rpc::StartServer({.listen = "127.0.0.1:0"}, {trainer_service_.get(), cluster_service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server->server);
    auto channel = rpc::MakeChannel({.target = "127.0.0.1:" + std::to_string(server->port)});
    ASSERT_TRUE(channel.ok());
    trainers_ = v1::TrainerService::NewStub(*channel);
    cluster_ = v1::ClusterService::NewStub(*channel);
  }

  void TearDown() override {
    rendezvous_->Shutdown();
    if (server_) server_->Shutdown();
  }

  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return ctx;
  }

  static v1::RegisterTrainerRequest Registration(const std::string& name, bool with_content) {
    v1::RegisterTrainerRequest r;
    r.set_name(name);
    r.mutable_device()->set_kind(v1::DEVICE_KIND_CPU);
    r.mutable_device()->set_name("test cpu");
    r.set_agent_version("test");
    v1::ModelRegistration* m = r.add_models();
    m->set_name("tiny-llama");
    m->set_weights_sha256(std::string(64, 'a'));
    m->set_weights_size_bytes(1000);
    for (const auto& [file, content] : {std::pair{"config.json", &kConfigJson}, {"tokenizer.json", &kTokenizerJson}}) {
      v1::ModelFile* f = m->add_files();
      f->set_name(file);
      f->set_size_bytes(static_cast<int64_t>(content->size()));
      f->set_sha256(Sha256Hex(*content));
      if (with_content) f->set_content(*content);
    }
    return r;
  }

  v1::RegisterTrainerResponse Register(const std::string& name) {
    v1::RegisterTrainerResponse out;
    grpc::Status s = trainers_->RegisterTrainer(Ctx(kClusterToken).get(), Registration(name, true), &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  // A job of tenant acme that preparation has moved to QUEUED (plan: 40 sequences, 5 steps).
  std::string PreparedJob(int trainers, bool activation_checkpointing = false) {
    auto data = store_->blobs().Put("{\"text\": \"hello\"}\n");
    EXPECT_TRUE(data.ok());
    auto ds = store_->datasets().Create("acme", {.name = "d.jsonl", .blob = *data, .record_count = 1,
                                                 .format = "text", .validation_json = "{}"});
    EXPECT_TRUE(ds.ok()) << ds.status();
    JobSpec spec;
    spec.base_model = "tiny-llama";
    spec.dataset = ds->id;
    spec.resources.trainers = trainers;
    spec.training.activation_checkpointing = activation_checkpointing;
    auto job = store_->jobs().Create("acme", spec, "");
    EXPECT_TRUE(job.ok()) << job.status();
    PreparationPlan plan;
    plan.sequences = 40;
    EXPECT_TRUE(FillSchedule(job->spec, plan).ok());
    auto train = store_->blobs().Put(kPreparedBytes);
    store::PreparedInfo info{.plan_json = plan.ToProtoJson(), .train_data = *train};
    EXPECT_TRUE(store_->jobs().Prepared(job->id, info).ok());
    return job->id;
  }

  v1::HeartbeatResponse Beat(const v1::RegisterTrainerResponse& reg, const std::vector<v1::AssignmentRef>& held = {}) {
    v1::HeartbeatRequest req;
    req.set_trainer_id(reg.trainer_id());
    req.set_session_id(reg.session_id());
    for (const auto& ref : held) {
      v1::AssignmentStatus* s = req.add_assignments();
      *s->mutable_ref() = ref;
      s->set_phase(v1::ASSIGNMENT_PHASE_RENDEZVOUS);
    }
    v1::HeartbeatResponse out;
    grpc::Status s = trainers_->Heartbeat(Ctx(kClusterToken).get(), req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  std::string user_token_;
  std::unique_ptr<TrainerRegistry> registry_;
  std::unique_ptr<RendezvousStore> rendezvous_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<TrainerService> trainer_service_;
  std::unique_ptr<ClusterService> cluster_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::TrainerService::Stub> trainers_;
  std::unique_ptr<v1::ClusterService::Stub> cluster_;
};

TEST_F(TrainerServicesTest, RegisterAsksForMissingFilesThenOpensASession) {
  v1::RegisterTrainerResponse first;
  ASSERT_TRUE(trainers_->RegisterTrainer(Ctx(kClusterToken).get(), Registration("cpu-a", false), &first).ok());
  EXPECT_TRUE(first.trainer_id().empty());
  EXPECT_TRUE(first.session_id().empty());
  EXPECT_EQ(first.missing_file_sha256_size(), 2);

  v1::RegisterTrainerResponse a = Register("cpu-a");
  EXPECT_EQ(a.trainer_id(), TrainerIdForName("cpu-a"));
  EXPECT_EQ(store_->trainers().GetByName("cpu-a")->id, a.trainer_id());  // one id, memory and disk
  EXPECT_FALSE(a.session_id().empty());
  EXPECT_EQ(a.heartbeat_interval().seconds(), 5);
  EXPECT_EQ(a.lease_duration().seconds(), 15);
  EXPECT_TRUE(store_->blobs().Has(Sha256Hex(kConfigJson)));
  auto stored = store_->trainers().GetByName("cpu-a");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->state, "IDLE");
  EXPECT_TRUE(store_->trainers().GetModel("tiny-llama").ok());

  // The second trainer's files are already stored: no round trip.
  v1::RegisterTrainerResponse b;
  ASSERT_TRUE(trainers_->RegisterTrainer(Ctx(kClusterToken).get(), Registration("cpu-b", false), &b).ok());
  EXPECT_EQ(b.missing_file_sha256_size(), 0);
  EXPECT_FALSE(b.session_id().empty());

  // A live name again is ALREADY_EXISTS.
  v1::RegisterTrainerResponse again;
  EXPECT_EQ(trainers_->RegisterTrainer(Ctx(kClusterToken).get(), Registration("cpu-a", true), &again).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(TrainerServicesTest, RegisterRejectsContentNotMatchingItsDigest) {
  v1::RegisterTrainerRequest r = Registration("cpu-a", true);
  r.mutable_models(0)->mutable_files(0)->set_content("{}");
  v1::RegisterTrainerResponse out;
  EXPECT_EQ(trainers_->RegisterTrainer(Ctx(kClusterToken).get(), r, &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(TrainerServicesTest, HeartbeatDeliversAssignmentsAndRendezvousWorks) {
  v1::RegisterTrainerResponse a = Register("cpu-a");
  v1::RegisterTrainerResponse b = Register("cpu-b");
  EXPECT_EQ(Beat(a).assignments_size(), 0);

  const std::string job_id = PreparedJob(2, /*activation_checkpointing=*/true);
  JobRequest job;
  job.job_id = job_id;
  job.tenant = "acme";
  job.base_model = "tiny-llama";
  job.trainers = 2;
  job.global_batch_size = 8;
  auto events = scheduler_->Submit(job);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->started.size(), 1u);
  ASSERT_TRUE(PersistSchedulerEvents(*store_, *events).ok());

  v1::HeartbeatResponse ha = Beat(a);
  v1::HeartbeatResponse hb = Beat(b);
  ASSERT_EQ(ha.assignments_size(), 1);
  ASSERT_EQ(hb.assignments_size(), 1);
  const v1::Assignment& a0 = ha.assignments(0);
  EXPECT_EQ(a0.ref().job_id(), job_id);
  // The job's part: spec, prepared data, schedule.
  EXPECT_EQ(a0.spec().training().global_batch_size(), 8);
  EXPECT_TRUE(a0.spec().training().activation_checkpointing());  // stored with the job, sent to every rank
  EXPECT_TRUE(hb.assignments(0).spec().training().activation_checkpointing());
  EXPECT_EQ(a0.train_data().sha256(), Sha256Hex(kPreparedBytes));
  EXPECT_EQ(a0.total_steps(), 5);
  EXPECT_EQ(a0.steps_per_epoch(), 5);
  EXPECT_FALSE(a0.has_resume_from());
  EXPECT_GT(a0.collective_timeout().seconds(), 0);
  EXPECT_EQ(a0.ref().rank(), 0);
  EXPECT_EQ(hb.assignments(0).ref().rank(), 1);
  EXPECT_EQ(a0.world_size(), 2);
  EXPECT_EQ(a0.grad_accum_steps(), 4);
  EXPECT_EQ(a0.device_kind(), v1::DEVICE_KIND_CPU);
  EXPECT_EQ(a0.base_model(), "tiny-llama");
  // Listing the assignment acknowledges it: it is not sent again.
  EXPECT_EQ(Beat(a, {a0.ref()}).assignments_size(), 0);
  Beat(b, {hb.assignments(0).ref()});

  // Rank 1 waits for the key; rank 0 posts it.
  v1::GetRendezvousValueRequest get;
  get.set_trainer_id(b.trainer_id());
  *get.mutable_ref() = hb.assignments(0).ref();
  get.set_key("nccl_unique_id");
  v1::GetRendezvousValueResponse got;
  grpc::Status none = trainers_->GetRendezvousValue(Ctx(kClusterToken).get(), get, &got);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::NOT_FOUND);

  get.mutable_wait()->set_seconds(20);
  grpc::Status waited;
  std::thread waiter([&] { waited = trainers_->GetRendezvousValue(Ctx(kClusterToken).get(), get, &got); });
  while (rendezvous_->Waiters() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  v1::PutRendezvousValueRequest put;
  put.set_trainer_id(a.trainer_id());
  *put.mutable_ref() = a0.ref();
  put.set_key("nccl_unique_id");
  put.set_value("id-bytes");
  google::protobuf::Empty empty;
  EXPECT_TRUE(trainers_->PutRendezvousValue(Ctx(kClusterToken).get(), put, &empty).ok());
  waiter.join();
  ASSERT_TRUE(waited.ok()) << waited.error_message();
  EXPECT_EQ(got.value(), "id-bytes");
  // The same value again is OK; another value is ALREADY_EXISTS.
  EXPECT_TRUE(trainers_->PutRendezvousValue(Ctx(kClusterToken).get(), put, &empty).ok());
  put.set_value("other");
  EXPECT_EQ(trainers_->PutRendezvousValue(Ctx(kClusterToken).get(), put, &empty).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);

  // A ref this trainer does not hold, or an old generation, is stale.
  put.set_trainer_id(b.trainer_id());
  EXPECT_EQ(trainers_->PutRendezvousValue(Ctx(kClusterToken).get(), put, &empty).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  get.mutable_ref()->set_generation(7);
  EXPECT_EQ(trainers_->GetRendezvousValue(Ctx(kClusterToken).get(), get, &got).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  // ListTrainers shows the job to its tenant.
  v1::ListTrainersResponse listed;
  ASSERT_TRUE(cluster_->ListTrainers(Ctx(user_token_).get(), {}, &listed).ok());
  ASSERT_EQ(listed.trainers_size(), 2);
  EXPECT_EQ(listed.trainers(0).state(), v1::TRAINER_STATE_BUSY);
  EXPECT_EQ(listed.trainers(0).job_id(), job_id);
  EXPECT_EQ(listed.trainers(1).rank(), 1);
}

TEST_F(TrainerServicesTest, HeartbeatOfAnUnknownSessionIsNotFound) {
  v1::RegisterTrainerResponse a = Register("cpu-a");
  v1::HeartbeatRequest req;
  req.set_trainer_id(a.trainer_id());
  req.set_session_id("not-the-session");
  v1::HeartbeatResponse out;
  EXPECT_EQ(trainers_->Heartbeat(Ctx(kClusterToken).get(), req, &out).error_code(), grpc::StatusCode::NOT_FOUND);

  // Past the lease the ticker declares the trainer LOST, in the store too; its next
  // heartbeat is NOT_FOUND.
  absl::Notification stop;
  std::thread ticker([&] { RunSchedulerTicks(*scheduler_, *store_, stop, absl::Milliseconds(5)); });
  clock_.Advance(absl::Seconds(16));
  for (int i = 0; i < 500 && store_->trainers().GetByName("cpu-a")->state != "LOST"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop.Notify();
  ticker.join();
  EXPECT_EQ(store_->trainers().GetByName("cpu-a")->state, "LOST");
  req.set_session_id(a.session_id());
  EXPECT_EQ(trainers_->Heartbeat(Ctx(kClusterToken).get(), req, &out).error_code(), grpc::StatusCode::NOT_FOUND);
  // Registering again opens a new session.
  EXPECT_NE(Register("cpu-a").session_id(), a.session_id());
}

TEST_F(TrainerServicesTest, ClusterListsTrainersModelsAndInfo) {
  Register("cpu-b");
  Register("cpu-a");
  for (const std::string& token : {user_token_, std::string(kClusterToken)}) {
    v1::ListTrainersResponse trainers;
    ASSERT_TRUE(cluster_->ListTrainers(Ctx(token).get(), {}, &trainers).ok());
    ASSERT_EQ(trainers.trainers_size(), 2);
    EXPECT_EQ(trainers.trainers(0).name(), "cpu-a");
    EXPECT_EQ(trainers.trainers(0).state(), v1::TRAINER_STATE_IDLE);
    EXPECT_EQ(trainers.trainers(0).models(0), "tiny-llama");
    EXPECT_EQ(trainers.trainers(0).device().kind(), v1::DEVICE_KIND_CPU);
  }

  v1::ListTrainersRequest page;
  page.set_page_size(1);
  v1::ListTrainersResponse first, second;
  ASSERT_TRUE(cluster_->ListTrainers(Ctx(user_token_).get(), page, &first).ok());
  ASSERT_EQ(first.trainers_size(), 1);
  ASSERT_FALSE(first.next_page_token().empty());
  page.set_page_token(first.next_page_token());
  ASSERT_TRUE(cluster_->ListTrainers(Ctx(user_token_).get(), page, &second).ok());
  ASSERT_EQ(second.trainers_size(), 1);
  EXPECT_EQ(second.trainers(0).name(), "cpu-b");
  EXPECT_TRUE(second.next_page_token().empty());
  page.set_page_token("garbage");
  EXPECT_EQ(cluster_->ListTrainers(Ctx(user_token_).get(), page, &second).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::ListModelsResponse models;
  ASSERT_TRUE(cluster_->ListModels(Ctx(user_token_).get(), {}, &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  const v1::Model& m = models.models(0);
  EXPECT_EQ(m.name(), "tiny-llama");
  EXPECT_EQ(m.trainer_ids_size(), 2);
  EXPECT_EQ(m.tokenizer(), v1::TOKENIZER_KIND_BPE);
  EXPECT_EQ(m.config().architecture(), "LlamaForCausalLM");
  EXPECT_EQ(m.config().num_layers(), 2);
  EXPECT_EQ(m.config().head_dim(), 16);
  EXPECT_EQ(m.config().num_key_value_heads(), 2);
  EXPECT_DOUBLE_EQ(m.config().rope_theta(), 500000.0);

  v1::ClusterInfo info;
  ASSERT_TRUE(cluster_->GetClusterInfo(Ctx(user_token_).get(), {}, &info).ok());
  EXPECT_EQ(info.api_version(), "herd.v1");
  EXPECT_EQ(info.models(), 1);
  ASSERT_EQ(info.trainers_size(), 3);
  EXPECT_EQ(info.trainers(0).state(), v1::TRAINER_STATE_IDLE);
  EXPECT_EQ(info.trainers(0).count(), 2);
  EXPECT_FALSE(info.jobs().empty());
}

TEST_F(TrainerServicesTest, TokensAreChecked) {
  v1::RegisterTrainerResponse reg;
  EXPECT_EQ(trainers_->RegisterTrainer(Ctx("").get(), Registration("cpu-a", true), &reg).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(trainers_->RegisterTrainer(Ctx("wrong-token-wrong-token-wrong-token-00").get(),
                                       Registration("cpu-a", true), &reg).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(trainers_->RegisterTrainer(Ctx(user_token_).get(), Registration("cpu-a", true), &reg).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::HeartbeatResponse hb;
  EXPECT_EQ(trainers_->Heartbeat(Ctx("").get(), {}, &hb).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  google::protobuf::Empty empty;
  EXPECT_EQ(trainers_->PutRendezvousValue(Ctx("nope").get(), {}, &empty).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::GetRendezvousValueResponse got;
  EXPECT_EQ(trainers_->GetRendezvousValue(Ctx("").get(), {}, &got).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::ListTrainersResponse trainers;
  EXPECT_EQ(cluster_->ListTrainers(Ctx("").get(), {}, &trainers).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::ListModelsResponse models;
  EXPECT_EQ(cluster_->ListModels(Ctx("bad").get(), {}, &models).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::ClusterInfo info;
  EXPECT_EQ(cluster_->GetClusterInfo(Ctx("").get(), {}, &info).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // Past authentication, a malformed ref is the next problem.
  v1::ReportProgressRequest progress;
  EXPECT_EQ(trainers_->ReportProgress(Ctx(kClusterToken).get(), progress, &empty).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(trainers_->ReportProgress(Ctx(user_token_).get(), progress, &empty).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(TrainerServicesTest, BlobsProgressCheckpointsAndExits) {
  v1::RegisterTrainerResponse a = Register("cpu-a");
  const std::string job_id = PreparedJob(1);
  JobRequest job{.job_id = job_id, .tenant = "acme", .base_model = "tiny-llama", .trainers = 1,
                 .global_batch_size = 8};
  auto events = scheduler_->Submit(job);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_TRUE(PersistSchedulerEvents(*store_, *events).ok());
  v1::HeartbeatResponse ha = Beat(a);
  ASSERT_EQ(ha.assignments_size(), 1);
  const v1::AssignmentRef ref = ha.assignments(0).ref();
  Beat(a, {ref});

  // FetchBlob: the whole blob in chunks of at most 1 MiB, then from an offset.
  auto fetch = [&](const std::string& sha, int64_t offset, std::string* bytes) {
    v1::FetchBlobRequest req;
    req.set_trainer_id(a.trainer_id());
    *req.mutable_ref() = ref;
    req.set_sha256(sha);
    req.set_offset(offset);
    auto ctx = Ctx(kClusterToken);
    auto reader = trainers_->FetchBlob(ctx.get(), req);
    v1::FetchBlobResponse msg;
    bool first = true;
    while (reader->Read(&msg)) {
      if (first) {
        EXPECT_TRUE(msg.has_blob());
        EXPECT_EQ(msg.blob().size_bytes(), static_cast<int64_t>(kPreparedBytes.size()));
        first = false;
        continue;
      }
      EXPECT_LE(msg.chunk().data().size(), 1u << 20);
      EXPECT_EQ(msg.chunk().offset(), offset + static_cast<int64_t>(bytes->size()));
      bytes->append(msg.chunk().data());
    }
    return reader->Finish();
  };
  const std::string sha = Sha256Hex(kPreparedBytes);
  std::string whole, tail;
  ASSERT_TRUE(fetch(sha, 0, &whole).ok());
  EXPECT_EQ(whole, kPreparedBytes);
  ASSERT_TRUE(fetch(sha, 5, &tail).ok());
  EXPECT_EQ(tail, kPreparedBytes.substr(5));
  std::string none;
  EXPECT_EQ(fetch(Sha256Hex(kConfigJson), 0, &none).error_code(), grpc::StatusCode::NOT_FOUND);  // not named
  EXPECT_EQ(fetch(sha, int64_t{1} << 40, &none).error_code(), grpc::StatusCode::OUT_OF_RANGE);

  // ReportProgress: points of this rank; another rank's point is refused.
  v1::ReportProgressRequest progress;
  progress.set_trainer_id(a.trainer_id());
  *progress.mutable_ref() = ref;
  for (int step = 1; step <= 2; ++step) {
    v1::ProgressPoint* p = progress.add_points();
    p->set_rank(0);
    p->set_step(step);
    p->set_total_steps(5);
    p->set_loss(2.0 / step);
    p->set_tokens(100);
  }
  v1::EvalPoint* eval = progress.add_evals();
  eval->set_step(2);
  eval->set_eval_loss(1.5);
  google::protobuf::Empty empty;
  ASSERT_TRUE(trainers_->ReportProgress(Ctx(kClusterToken).get(), progress, &empty).ok());
  ASSERT_TRUE(trainers_->ReportProgress(Ctx(kClusterToken).get(), progress, &empty).ok());  // a retry
  auto history = store_->jobs().Events(job_id, 0);
  ASSERT_TRUE(history.ok());
  EXPECT_EQ(std::count_if(history->begin(), history->end(),
                          [](const store::JobEvent& e) { return e.type == store::JobEventType::kEvaluated; }),
            1) << "one EVALUATED event, whatever the retries";
  progress.mutable_points(0)->set_rank(1);
  EXPECT_EQ(trainers_->ReportProgress(Ctx(kClusterToken).get(), progress, &empty).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // UploadCheckpoint: a periodic checkpoint of two files, streamed back to back.
  const std::string config = "{\"r\": 4}", weights(1500000, 'w');
  auto upload = [&](int64_t step, const std::string& weights_bytes, int64_t gap) {
    auto ctx = Ctx(kClusterToken);
    auto writer = trainers_->UploadCheckpoint(ctx.get(), &empty);
    v1::UploadCheckpointRequest header;
    v1::CheckpointHeader* h = header.mutable_header();
    h->set_trainer_id(a.trainer_id());
    *h->mutable_ref() = ref;
    h->set_step(step);
    std::vector<store::NamedBlob> named = {
        {.name = "adapter_config.json", .blob = {.sha256 = Sha256Hex(config), .size_bytes = static_cast<int64_t>(config.size())}},
        {.name = "adapter_model.safetensors", .blob = {.sha256 = Sha256Hex(weights), .size_bytes = static_cast<int64_t>(weights.size())}}};
    for (const auto& n : named) {
      v1::FileInfo* f = h->mutable_manifest()->add_files();
      f->set_name(n.name);
      f->set_size_bytes(n.blob.size_bytes);
      f->set_sha256(n.blob.sha256);
    }
    h->mutable_manifest()->set_total_size_bytes(static_cast<int64_t>(config.size() + weights.size()));
    h->mutable_manifest()->set_sha256(store::ManifestDigest(named));
    writer->Write(header);
    const std::string stream = config + weights_bytes;
    for (size_t off = 0; off < stream.size(); off += 1 << 20) {
      v1::UploadCheckpointRequest chunk;
      chunk.mutable_chunk()->set_offset(static_cast<int64_t>(off) + (off > 0 ? gap : 0));
      chunk.mutable_chunk()->set_data(stream.substr(off, 1 << 20));
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  };
  std::string corrupt = weights;
  corrupt[10] = 'x';
  EXPECT_EQ(upload(3, corrupt, 0).error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(upload(3, weights, 7).error_code(), grpc::StatusCode::ABORTED);
  grpc::Status stored = upload(3, weights, 0);
  ASSERT_TRUE(stored.ok()) << stored.error_message();
  EXPECT_TRUE(upload(3, weights, 0).ok());  // a retry of a stored step
  auto ck = store_->checkpoints().Get(job_id, 3);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->files.size(), 2u);
  EXPECT_EQ(store_->blobs().Read(ck->files[1].blob.sha256).value(), weights);

  // ReportEngineExit: an engine error fails the job with the engine's words in its history.
  v1::ReportEngineExitRequest exit;
  exit.set_trainer_id(a.trainer_id());
  *exit.mutable_ref() = ref;
  EXPECT_EQ(trainers_->ReportEngineExit(Ctx(kClusterToken).get(), exit, &empty).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // reason UNSPECIFIED
  exit.set_reason(v1::ENGINE_EXIT_REASON_ERROR);
  exit.mutable_failure()->set_code("RESOURCE_EXHAUSTED");
  exit.mutable_failure()->set_message("out of memory at step 4");
  exit.set_stderr_tail("the end of the log");
  ASSERT_TRUE(trainers_->ReportEngineExit(Ctx(kClusterToken).get(), exit, &empty).ok());
  auto failed = store_->jobs().GetById(job_id);
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->state, store::JobState::kFailed);
  history = store_->jobs().Events(job_id, 0);
  ASSERT_TRUE(history.ok());
  EXPECT_TRUE(std::any_of(history->begin(), history->end(), [](const store::JobEvent& e) {
    return e.type == store::JobEventType::kRankFailed && e.message.find("out of memory") != std::string::npos;
  }));
  // The job has moved on: the ref is stale now.
  EXPECT_EQ(trainers_->ReportProgress(Ctx(kClusterToken).get(), progress, &empty).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace herd::coordinator::services
