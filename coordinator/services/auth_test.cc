// Auth and tenancy on every RPC, served in-process on 127.0.0.1 port 0 over a real Store
// (DESIGN.md §8, the contract at the top of common.proto). The RPCs are enumerated from the
// herd.v1 service descriptors and called through grpc::GenericStub with requests built by
// reflection, so an RPC added to a .proto is covered without touching this file:
//   - a missing, malformed, unknown or revoked token answers UNAUTHENTICATED, with one message;
//   - the cluster token answers PERMISSION_DENIED on the user services except ClusterService;
//   - another tenant's dataset, job or upload answers NOT_FOUND with exactly the message a
//     missing id of the same shape gets, and nothing of the owner's leaks into any answer;
//   - TrainerService takes only the cluster token.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "common/strings.h"
#include "coordinator/dataset_uploads.h"
#include "coordinator/registry.h"
#include "coordinator/rendezvous.h"
#include "coordinator/scheduler.h"
#include "coordinator/services/adapter_service.h"
#include "coordinator/services/cluster_service.h"
#include "coordinator/services/dataset_service.h"
#include "coordinator/services/job_service.h"
#include "coordinator/services/trainer_service.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"
#include "herd/v1/cluster.pb.h"
#include "herd/v1/datasets.grpc.pb.h"
#include "herd/v1/jobs.grpc.pb.h"

namespace herd::coordinator::services {
namespace {

namespace pb = google::protobuf;
using store::testing::kTenantA;
using store::testing::kTenantB;

// The herd.v1 files known today; the test also lists $HERD_SOURCE_DIR/proto/herd/v1, so a new
// file is found (and fails loudly if its generated code is not linked into this binary).
constexpr const char* kKnownProtoFiles[] = {"herd/v1/common.proto", "herd/v1/datasets.proto",
                                            "herd/v1/jobs.proto",   "herd/v1/adapters.proto",
                                            "herd/v1/cluster.proto", "herd/v1/trainers.proto"};
// Methods known today, so that an enumeration that silently finds nothing fails:
// DatasetService 6, JobService 6, AdapterService 2, ClusterService 3; TrainerService 8.
constexpr int kKnownUserMethods = 17;
constexpr int kKnownTrainerMethods = 8;
constexpr char kTrainerService[] = "herd.v1.TrainerService";
constexpr char kClusterService[] = "herd.v1.ClusterService";
constexpr char kDatasetService[] = "herd.v1.DatasetService";
constexpr char kJobService[] = "herd.v1.JobService";

// What tenant A owns; the strings are distinctive so that a leak into any answer is found.
constexpr char kSecretDatasetName[] = "acme-secret-dataset.jsonl";
constexpr char kSecretJobName[] = "acme-secret-job";
constexpr char kSecretUploadName[] = "acme-secret-upload.jsonl";
constexpr char kSecretKey[] = "acme-secret-idempotency-key";
constexpr char kSecretWeights[] = "acme-secret-adapter-weights";
const std::string kUploadContent = "{\"text\": \"acme only\"}\n";

struct Enumeration {
  std::vector<std::string> missing_files;        // listed, but not in the generated pool
  std::vector<std::string> services;             // full names
  std::vector<std::string> user_methods;         // full names, every service but TrainerService
  std::vector<std::string> trainer_methods;      // full names, TrainerService
};

Enumeration Enumerate() {
  std::set<std::string> files(std::begin(kKnownProtoFiles), std::end(kKnownProtoFiles));
  if (const char* src = std::getenv("HERD_SOURCE_DIR"); src != nullptr && *src != '\0') {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(StrCat(src, "/proto/herd/v1"), ec)) {
      if (entry.path().extension() == ".proto") files.insert(StrCat("herd/v1/", entry.path().filename().string()));
    }
  }
  Enumeration out;
  for (const std::string& name : files) {
    const pb::FileDescriptor* file = pb::DescriptorPool::generated_pool()->FindFileByName(name);
    if (file == nullptr) {
      out.missing_files.push_back(name);
      continue;
    }
    if (file->package() != "herd.v1") continue;
    for (int s = 0; s < file->service_count(); ++s) {
      const pb::ServiceDescriptor* service = file->service(s);
      out.services.push_back(service->full_name());
      for (int m = 0; m < service->method_count(); ++m) {
        const std::string& method = service->method(m)->full_name();
        (service->full_name() == kTrainerService ? out.trainer_methods : out.user_methods).push_back(method);
      }
    }
  }
  return out;
}

const pb::MethodDescriptor* FindMethod(const std::string& full_name) {
  return pb::DescriptorPool::generated_pool()->FindMethodByName(full_name);
}

// "herd.v1.JobService.GetJob" -> "/herd.v1.JobService/GetJob".
std::string Path(const pb::MethodDescriptor& method) {
  return StrCat("/", method.service()->full_name(), "/", method.name());
}

// "herd.v1.JobService.GetJob" -> "JobService_GetJob" (a gtest parameter name).
std::string ParamName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param.substr(info.param.find('.', info.param.find('.') + 1) + 1);
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

// The objects of one tenant that a request may refer to.
struct Ids {
  std::string dataset, job, upload;
  std::vector<std::string> All() const { return {dataset, job, upload}; }
};

// Ids of the same kind and length that name nothing: the prefix ("ds_", "job_", "up_") kept,
// the rest replaced.
std::string SameShape(const std::string& id) {
  const size_t keep = id.find('_') + 1;
  std::string out = id.substr(0, keep) + std::string(id.size() - keep, 'a');
  if (out == id) out.back() = 'b';
  return out;
}
Ids SameShape(const Ids& ids) { return {SameShape(ids.dataset), SameShape(ids.job), SameShape(ids.upload)}; }

// Which of `ids` a string field of a request of `service` carries, by the field's name.
const std::string* IdFor(const pb::ServiceDescriptor& service, const pb::FieldDescriptor& field,
                         const Ids& ids) {
  if (field.type() != pb::FieldDescriptor::TYPE_STRING || field.is_repeated()) return nullptr;
  const std::string& name = field.name();
  if (name == "job_id") return &ids.job;
  if (name == "dataset_id") return &ids.dataset;
  if (name == "upload_id") return &ids.upload;
  if (name == "id" && service.full_name() == kDatasetService) return &ids.dataset;
  if (name == "id" && service.full_name() == kJobService) return &ids.job;
  return nullptr;
}

// Whether a message of type `type` (or one nested in it, a few levels down) has an id field.
bool HasIdField(const pb::ServiceDescriptor& service, const pb::Descriptor& type, int depth = 0) {
  if (depth > 3) return false;
  static const Ids kProbe{"d", "j", "u"};
  for (int i = 0; i < type.field_count(); ++i) {
    const pb::FieldDescriptor& f = *type.field(i);
    if (IdFor(service, f, kProbe) != nullptr) return true;
    if (f.type() == pb::FieldDescriptor::TYPE_MESSAGE && !f.is_repeated() &&
        HasIdField(service, *f.message_type(), depth + 1)) {
      return true;
    }
  }
  return false;
}

// Sets every id field of `message` (recursively) from `ids`, adding the ids it set to `used`.
void FillIds(const pb::ServiceDescriptor& service, const Ids& ids, pb::Message* message,
             std::set<std::string>* used, int depth = 0) {
  const pb::Reflection& r = *message->GetReflection();
  const pb::Descriptor& type = *message->GetDescriptor();
  for (int i = 0; i < type.field_count(); ++i) {
    const pb::FieldDescriptor* f = type.field(i);
    if (const std::string* id = IdFor(service, *f, ids); id != nullptr) {
      r.SetString(message, f, *id);
      used->insert(*id);
    } else if (f->type() == pb::FieldDescriptor::TYPE_MESSAGE && !f->is_repeated() && depth < 3 &&
               HasIdField(service, *f->message_type(), depth + 1)) {
      FillIds(service, ids, r.MutableMessage(message, f), used, depth + 1);
    }
  }
}

// The field at a dotted path ("spec.base_model"), creating the messages on the way; null (and a
// test failure) when the path no longer names a field.
std::pair<pb::Message*, const pb::FieldDescriptor*> FieldAt(pb::Message* message, const std::string& path) {
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string name = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const pb::FieldDescriptor* f = message->GetDescriptor()->FindFieldByName(name);
    if (f == nullptr) {
      ADD_FAILURE() << "no field " << path << " in " << message->GetDescriptor()->full_name()
                    << ": update the table of request setups in auth_test.cc";
      return {nullptr, nullptr};
    }
    if (dot == std::string::npos) return {message, f};
    message = message->GetReflection()->MutableMessage(message, f);
    start = dot + 1;
  }
}
void SetString(pb::Message* m, const std::string& path, const std::string& value) {
  auto [owner, f] = FieldAt(m, path);
  if (f != nullptr) owner->GetReflection()->SetString(owner, f, value);
}
void SetInt64(pb::Message* m, const std::string& path, int64_t value) {
  auto [owner, f] = FieldAt(m, path);
  if (f != nullptr) owner->GetReflection()->SetInt64(owner, f, value);
}

// Where reflection is not enough: what a request needs besides ids to get past validation, so
// that the answer is about the object (or about the caller's own new object).
const std::map<std::string, std::function<void(pb::Message*)>>& RequestSetups() {
  static const auto* const setups = new std::map<std::string, std::function<void(pb::Message*)>>{
      {"herd.v1.JobService.CreateJob",
       [](pb::Message* m) {
         SetString(m, "spec.base_model", "tiny-llama");
         SetString(m, "spec.name", "b-job");
       }},
      {"herd.v1.DatasetService.StartUpload",
       [](pb::Message* m) {
         // Exactly tenant A's open upload: another tenant must get a session of its own.
         SetString(m, "name", kSecretUploadName);
         SetInt64(m, "total_size_bytes", static_cast<int64_t>(kUploadContent.size()));
         SetString(m, "sha256", Sha256Hex(kUploadContent));
       }},
  };
  return *setups;
}

// A request of `method`'s input type: empty, or with `ids` in its id fields and the setup of
// the table above. `used` gets the ids it carries.
std::string BuildRequest(const pb::MethodDescriptor& method, const Ids* ids,
                         std::set<std::string>* used = nullptr) {
  pb::DynamicMessageFactory factory;
  std::unique_ptr<pb::Message> message(factory.GetPrototype(method.input_type())->New());
  if (ids != nullptr) {
    std::set<std::string> ignored;
    FillIds(*method.service(), *ids, message.get(), used != nullptr ? used : &ignored);
    if (auto it = RequestSetups().find(method.full_name()); it != RequestSetups().end()) {
      it->second(message.get());
    }
  }
  return message->SerializeAsString();
}

struct CallResult {
  grpc::Status status;
  std::vector<std::string> responses;  // serialized
};

std::string Describe(const CallResult& r) {
  return StrCat("code ", static_cast<int>(r.status.error_code()), " '", r.status.error_message(), "', ",
                r.responses.size(), " responses");
}

// `message` with every id of `ids` replaced by "<id>", so that answers about two ids compare.
std::string Normalize(std::string message, const Ids& ids) {
  for (const std::string& id : ids.All()) {
    for (size_t at = message.find(id); at != std::string::npos; at = message.find(id, at)) {
      message.replace(at, id.size(), "<id>");
    }
  }
  return message;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return !needle.empty() && haystack.find(needle) != std::string::npos;
}

class RpcFixture : public store::testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto a = store_->tokens().CreateUserToken(kTenantA, "test");
    auto b = store_->tokens().CreateUserToken(kTenantB, "test");
    auto c = store_->tokens().CreateClusterToken("test");
    auto revoked = store_->tokens().CreateUserToken(kTenantA, "revoked");
    ASSERT_TRUE(a.ok() && b.ok() && c.ok() && revoked.ok());
    token_a_ = a->token;
    token_b_ = b->token;
    cluster_token_ = c->token;
    revoked_token_ = revoked->token;
    HERD_ASSERT_OK(store_->tokens().Revoke(revoked->info.id));

    uploads_ = std::make_unique<DatasetUploads>(store_.get());
    registry_ = *TrainerRegistry::Create({}, &clock_);
    rendezvous_ = *RendezvousStore::Create();
    scheduler_ = *Scheduler::Create({}, registry_.get(), rendezvous_.get(), &clock_);
    dataset_service_ = std::make_unique<DatasetService>(uploads_.get(), &store_->tokens());
    job_service_ = std::make_unique<JobService>(&store_->jobs(), &store_->tokens());
    adapter_service_ =
        std::make_unique<AdapterService>(&store_->checkpoints(), &store_->blobs(), &store_->tokens());
    cluster_service_ = std::make_unique<ClusterService>(store_.get(), scheduler_.get(), registry_.get());
    trainer_service_ = std::make_unique<TrainerService>(store_.get(), scheduler_.get(), rendezvous_.get());
    auto server = rpc::StartServer({.listen = "127.0.0.1:0"},
                                   {dataset_service_.get(), job_service_.get(), adapter_service_.get(),
                                    cluster_service_.get(), trainer_service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server->server);
    auto channel = rpc::MakeChannel({.target = StrCat("127.0.0.1:", server->port)});
    ASSERT_TRUE(channel.ok()) << channel.status();
    channel_ = *channel;
    generic_ = std::make_unique<grpc::GenericStub>(channel_);

    // Tenant A: a dataset, a running job on it with one checkpoint, and an open upload.
    a_.dataset = MakeDataset(kTenantA, kSecretDatasetName).id;
    auto job = store_->jobs().Create(kTenantA, Spec(a_.dataset, kSecretJobName), kSecretKey);
    ASSERT_TRUE(job.ok()) << job.status();
    a_.job = job->id;
    ASSERT_TRUE(store_->jobs().Transition(a_.job, store::JobState::kQueued).ok());
    ASSERT_TRUE(store_->jobs().FormWorld(a_.job, {.generation = 1, .trainer_ids = {"tr_a"}}).ok());
    store::NewCheckpoint checkpoint;
    checkpoint.step = 10;
    checkpoint.generation = 1;
    checkpoint.files = {{"adapter_config.json", *store_->blobs().Put("{\"r\": 16}")},
                        {"adapter_model.safetensors", *store_->blobs().Put(kSecretWeights)}};
    auto added = store_->checkpoints().Add(a_.job, checkpoint);
    ASSERT_TRUE(added.ok()) << added.status();
    auto upload = uploads_->Start(kTenantA, {.name = kSecretUploadName,
                                             .total_size_bytes = static_cast<int64_t>(kUploadContent.size()),
                                             .sha256 = Sha256Hex(kUploadContent)});
    ASSERT_TRUE(upload.ok()) << upload.status();
    a_.upload = upload->id;
    secrets_ = {a_.dataset, a_.job, a_.upload, kSecretDatasetName, kSecretJobName, kSecretUploadName,
                kSecretKey, kSecretWeights};
    // A trainer working on A's job, so that the cluster view has something of A's to hide.
    TrainerRegistration trainer;
    trainer.name = "cpu-a";
    trainer.device_kind = DeviceKind::kCpu;
    trainer.device_name = "test cpu";
    HeldModel model;
    model.name = "tiny-llama";
    model.files = {{"config.json", std::string(64, 'c')}, {"tokenizer.json", std::string(64, 'e')}};
    model.weights_sha256 = std::string(64, 'f');
    model.tokenizer = "bpe";
    trainer.models.push_back(model);
    auto registered = scheduler_->RegisterTrainer(trainer);
    ASSERT_TRUE(registered.ok()) << registered.status();
    auto submitted = scheduler_->Submit({.job_id = a_.job, .tenant = kTenantA, .base_model = "tiny-llama"});
    ASSERT_TRUE(submitted.ok()) << submitted.status();
    ASSERT_EQ(submitted->started.size(), 1u);
  }

  void TearDown() override {
    if (rendezvous_) rendezvous_->Shutdown();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  }

  // One call of `method` with `authorization` metadata (none when empty): writes `request` (for
  // every kind of method: a client stream gets it as its one message), half-closes, reads the
  // answers and the status. A server stream is cancelled after `max_responses` answers.
  CallResult Call(const pb::MethodDescriptor& method, const std::string& authorization,
                  const std::string& request, size_t max_responses = 64) {
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    CallResult result;
    void* tag = nullptr;
    bool ok = false;
    auto wait = [&] { return cq.Next(&tag, &ok) && ok; };
    std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = generic_->PrepareCall(&context, Path(method), &cq);
    call->StartCall(call.get());
    if (wait()) {
      grpc::Slice slice(request);
      grpc::ByteBuffer buffer(&slice, 1);
      call->Write(buffer, call.get());
      if (wait()) {
        call->WritesDone(call.get());
        (void)wait();
      }
      while (true) {
        if (result.responses.size() >= max_responses && method.server_streaming()) {
          context.TryCancel();
          break;
        }
        grpc::ByteBuffer out;
        call->Read(&out, call.get());
        if (!wait()) break;
        std::vector<grpc::Slice> slices;
        (void)out.Dump(&slices);
        std::string bytes;
        for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
        result.responses.push_back(std::move(bytes));
      }
    }
    call->Finish(&result.status, call.get());
    (void)wait();
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    return result;
  }

  // The secrets of tenant A found in an answer given to another tenant, except those the request
  // itself carried (a NOT_FOUND message may echo an id; StartUpload echoes the name).
  std::vector<std::string> Leaks(const CallResult& r, const std::string& request) const {
    std::vector<std::string> found;
    for (const std::string& secret : secrets_) {
      if (Contains(request, secret)) continue;
      bool leaked = Contains(r.status.error_message(), secret) || Contains(r.status.error_details(), secret);
      for (const std::string& bytes : r.responses) leaked = leaked || Contains(bytes, secret);
      if (leaked) found.push_back(secret);
    }
    return found;
  }

  static std::string Bearer(const std::string& token) { return "Bearer " + token; }

  std::string token_a_, token_b_, cluster_token_, revoked_token_;
  Ids a_;
  std::vector<std::string> secrets_;
  std::unique_ptr<DatasetUploads> uploads_;
  std::unique_ptr<TrainerRegistry> registry_;
  std::unique_ptr<RendezvousStore> rendezvous_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<DatasetService> dataset_service_;
  std::unique_ptr<JobService> job_service_;
  std::unique_ptr<AdapterService> adapter_service_;
  std::unique_ptr<ClusterService> cluster_service_;
  std::unique_ptr<TrainerService> trainer_service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> generic_;
};

TEST(RpcEnumerationTest, FindsEveryServiceAndMethod) {
  const Enumeration e = Enumerate();
  EXPECT_TRUE(e.missing_files.empty())
      << "not in the generated descriptor pool (link its generated code into this test): "
      << StrJoin(e.missing_files, ", ");
  EXPECT_GE(static_cast<int>(e.user_methods.size()), kKnownUserMethods) << StrJoin(e.user_methods, ", ");
  EXPECT_GE(static_cast<int>(e.trainer_methods.size()), kKnownTrainerMethods) << StrJoin(e.trainer_methods, ", ");
  for (const char* s : {kDatasetService, kJobService, "herd.v1.AdapterService", kClusterService, kTrainerService}) {
    EXPECT_NE(std::find(e.services.begin(), e.services.end(), s), e.services.end()) << s;
  }
  for (const std::string& m : e.user_methods) EXPECT_NE(FindMethod(m), nullptr) << m;
}

class UserRpcTest : public RpcFixture, public ::testing::WithParamInterface<std::string> {
 protected:
  const pb::MethodDescriptor& method() const { return *FindMethod(GetParam()); }
};

// Auth comes before anything else: an empty (invalid) request and one naming tenant A's
// objects get the same answer, and every token problem reads the same.
TEST_P(UserRpcTest, MissingMalformedUnknownOrRevokedTokenIsUnauthenticated) {
  const std::string empty = BuildRequest(method(), nullptr);
  const std::string filled = BuildRequest(method(), &a_);
  const CallResult none = Call(method(), "", empty);
  ASSERT_EQ(none.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << Describe(none) << " (UNIMPLEMENTED: register the service with this test's server)";
  const std::string unknown = "herd_u_" + std::string(token_a_.size() - 7, 'a');
  const std::vector<std::string> headers = {
      "",  // no metadata
      "Bearer",
      "Bearer ",
      "Bearer    ",
      token_a_,  // no scheme
      StrCat("Basic ", token_a_),
      StrCat("Bearer ", token_a_, " extra"),
      Bearer(unknown),
      Bearer(revoked_token_),
      Bearer(std::string(4096, 'x')),
  };
  for (const std::string& header : headers) {
    for (const std::string* request : {&empty, &filled}) {
      CallResult r = Call(method(), header, *request);
      EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << "authorization '" << header.substr(0, 64) << "': " << Describe(r);
      EXPECT_EQ(r.status.error_message(), none.status.error_message()) << header.substr(0, 64);
      EXPECT_TRUE(r.responses.empty()) << header.substr(0, 64);
      EXPECT_EQ(Leaks(r, ""), std::vector<std::string>{}) << header.substr(0, 64);
    }
  }
}

// common.proto: a valid token of the wrong kind answers PERMISSION_DENIED; ClusterService also
// accepts the cluster token.
TEST_P(UserRpcTest, ClusterTokenIsPermissionDeniedExceptOnClusterService) {
  CallResult r = Call(method(), Bearer(cluster_token_), BuildRequest(method(), &a_));
  if (method().service()->full_name() == kClusterService) {
    EXPECT_TRUE(r.status.ok()) << Describe(r);
    return;
  }
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << Describe(r);
  EXPECT_TRUE(r.responses.empty());
  EXPECT_EQ(Leaks(r, ""), std::vector<std::string>{}) << Describe(r);
}

// Tenant B naming tenant A's object gets what a missing id of the same shape gets; methods that
// name no object (listings, creation, the cluster view) show B nothing of A's.
TEST_P(UserRpcTest, AnotherTenantsObjectAnswersLikeAMissingOne) {
  std::set<std::string> sent;
  const std::string request = BuildRequest(method(), &a_, &sent);
  if (sent.empty()) {
    CallResult r = Call(method(), Bearer(token_b_), request);
    EXPECT_EQ(Leaks(r, request), std::vector<std::string>{}) << Describe(r);
    EXPECT_NE(r.status.error_code(), grpc::StatusCode::INTERNAL) << Describe(r);
    return;
  }
  const Ids fake = SameShape(a_);
  const CallResult theirs = Call(method(), Bearer(token_b_), request);
  const CallResult missing = Call(method(), Bearer(token_b_), BuildRequest(method(), &fake));
  EXPECT_EQ(missing.status.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(missing);
  EXPECT_EQ(theirs.status.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(theirs);
  EXPECT_EQ(Normalize(theirs.status.error_message(), a_), Normalize(missing.status.error_message(), fake))
      << "another tenant's object must answer exactly like a missing one";
  EXPECT_EQ(theirs.status.error_details(), missing.status.error_details());
  EXPECT_TRUE(theirs.responses.empty()) << Describe(theirs);
  EXPECT_EQ(Leaks(theirs, request), std::vector<std::string>{}) << Describe(theirs);

  // The control: the ids do name tenant A's objects, so the owner is answered about them.
  const CallResult owner = Call(method(), Bearer(token_a_), request, /*max_responses=*/1);
  EXPECT_FALSE(owner.status.error_code() == grpc::StatusCode::NOT_FOUND &&
               Normalize(owner.status.error_message(), a_) == Normalize(missing.status.error_message(), fake))
      << "the owner got the missing-object answer: " << Describe(owner);
}

INSTANTIATE_TEST_SUITE_P(AllUserRpcs, UserRpcTest, ::testing::ValuesIn(Enumerate().user_methods), ParamName);

class TrainerRpcTest : public RpcFixture, public ::testing::WithParamInterface<std::string> {
 protected:
  const pb::MethodDescriptor& method() const { return *FindMethod(GetParam()); }
};

// trainers.proto / common.proto: TrainerService takes the cluster token; a user token is a valid
// token of the wrong kind.
TEST_P(TrainerRpcTest, TakesOnlyTheClusterToken) {
  const std::string request = BuildRequest(method(), nullptr);
  CallResult none = Call(method(), "", request);
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(none);
  CallResult unknown = Call(method(), Bearer("herd_c_" + std::string(cluster_token_.size() - 7, 'a')), request);
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(unknown);
  EXPECT_EQ(unknown.status.error_message(), none.status.error_message());
  for (const std::string& token : {token_a_, token_b_}) {
    CallResult user = Call(method(), Bearer(token), request);
    EXPECT_EQ(user.status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << Describe(user);
    EXPECT_TRUE(user.responses.empty());
  }
  // The cluster token gets past auth (the empty request is then judged on its own).
  CallResult cluster = Call(method(), Bearer(cluster_token_), request, /*max_responses=*/1);
  EXPECT_NE(cluster.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(cluster);
  EXPECT_NE(cluster.status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << Describe(cluster);
}

INSTANTIATE_TEST_SUITE_P(AllTrainerRpcs, TrainerRpcTest, ::testing::ValuesIn(Enumerate().trainer_methods),
                         ParamName);

class TenancyTest : public RpcFixture {
 protected:
  int64_t JobsSeenBy(const std::string& token) {
    CallResult r = Call(*FindMethod("herd.v1.ClusterService.GetClusterInfo"), Bearer(token),
                        herd::v1::GetClusterInfoRequest().SerializeAsString());
    EXPECT_TRUE(r.status.ok()) << Describe(r);
    EXPECT_EQ(r.responses.size(), 1u);
    herd::v1::ClusterInfo info;
    if (r.responses.size() != 1 || !info.ParseFromString(r.responses[0])) return -1;
    int64_t total = 0;
    for (const herd::v1::JobStateCount& c : info.jobs()) total += c.count();
    return total;
  }
};

TEST_F(TenancyTest, ListingsShowTheOwnerItsObjectsAndNobodyElse) {
  for (const char* name : {"herd.v1.DatasetService.ListDatasets", "herd.v1.JobService.ListJobs"}) {
    const pb::MethodDescriptor& m = *FindMethod(name);
    CallResult owner = Call(m, Bearer(token_a_), BuildRequest(m, nullptr));
    ASSERT_TRUE(owner.status.ok()) << name << ": " << Describe(owner);
    ASSERT_EQ(owner.responses.size(), 1u);
    EXPECT_TRUE(Contains(owner.responses[0], a_.dataset) || Contains(owner.responses[0], a_.job)) << name;
    CallResult other = Call(m, Bearer(token_b_), BuildRequest(m, nullptr));
    ASSERT_TRUE(other.status.ok()) << name << ": " << Describe(other);
    ASSERT_EQ(other.responses.size(), 1u);
    EXPECT_EQ(other.responses[0], "") << name << ": tenant B's listing is not empty";
  }
}

TEST_F(TenancyTest, ClusterInfoCountsOnlyTheCallersJobs) {
  EXPECT_EQ(JobsSeenBy(token_a_), 1);
  EXPECT_EQ(JobsSeenBy(token_b_), 0);
  EXPECT_GE(JobsSeenBy(cluster_token_), 1);
}

// cluster.proto: trainers are shared, but what one works on is shown only to the job's tenant
// (and to the cluster token).
TEST_F(TenancyTest, TrainersShowTheirJobOnlyToItsTenant) {
  const pb::MethodDescriptor& list = *FindMethod("herd.v1.ClusterService.ListTrainers");
  auto job_of_first_trainer = [&](const std::string& token) {
    CallResult r = Call(list, Bearer(token), herd::v1::ListTrainersRequest().SerializeAsString());
    EXPECT_TRUE(r.status.ok()) << Describe(r);
    herd::v1::ListTrainersResponse page;
    if (r.responses.size() != 1 || !page.ParseFromString(r.responses[0]) || page.trainers_size() != 1) {
      ADD_FAILURE() << "expected one trainer: " << Describe(r);
      return std::string("?");
    }
    EXPECT_EQ(Leaks(r, ""), token == token_b_ ? std::vector<std::string>{} : std::vector<std::string>{a_.job});
    return page.trainers(0).job_id();
  };
  EXPECT_EQ(job_of_first_trainer(token_a_), a_.job);
  EXPECT_EQ(job_of_first_trainer(cluster_token_), a_.job);
  EXPECT_EQ(job_of_first_trainer(token_b_), "");
}

// Keys that make a call idempotent belong to the tenant: B reusing A's idempotency key or A's
// exact upload parameters gets objects of its own, never A's (nor an error naming them).
TEST_F(TenancyTest, IdempotencyKeysAndUploadSessionsAreTenantScoped) {
  const std::string dataset_b = MakeDataset(kTenantB, "b.jsonl").id;
  auto jobs = herd::v1::JobService::NewStub(channel_);
  auto datasets = herd::v1::DatasetService::NewStub(channel_);
  auto context = [](const std::string& token) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    c->AddMetadata("authorization", "Bearer " + token);
    return c;
  };
  herd::v1::CreateJobRequest create;
  create.mutable_spec()->set_base_model("tiny-llama");
  create.mutable_spec()->set_dataset_id(dataset_b);
  create.set_idempotency_key(kSecretKey);
  herd::v1::Job job;
  grpc::Status s = jobs->CreateJob(context(token_b_).get(), create, &job);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(job.id(), a_.job);
  EXPECT_EQ(job.spec().dataset_id(), dataset_b);

  herd::v1::StartUploadRequest start;
  start.set_name(kSecretUploadName);
  start.set_total_size_bytes(static_cast<int64_t>(kUploadContent.size()));
  start.set_sha256(Sha256Hex(kUploadContent));
  herd::v1::Upload upload;
  s = datasets->StartUpload(context(token_b_).get(), start, &upload);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(upload.upload_id(), a_.upload);
  // The owner's resumption still finds its own session.
  s = datasets->StartUpload(context(token_a_).get(), start, &upload);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(upload.upload_id(), a_.upload);
}

}  // namespace
}  // namespace herd::coordinator::services
