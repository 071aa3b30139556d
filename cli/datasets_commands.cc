// `herd datasets ...`: see datasets_commands.h.
#include "cli/datasets_commands.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "cli/exit_codes.h"
#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "common/strings.h"
#include "datasets/records.h"
#include "cli/call.h"
#include "herd/v1/datasets.grpc.pb.h"

namespace herd::cli {
namespace {

constexpr int64_t kChunkBytes = int64_t{1} << 20;  // common.proto: at most 1 MiB per chunk

// A connected stub plus what every call carries.
struct Client {
  ClientConfig config;
  std::unique_ptr<herd::v1::DatasetService::Stub> stub;

  void Prepare(grpc::ClientContext* context, absl::Duration deadline) const { PrepareCall(config, context, deadline); }
};

absl::StatusOr<Client> Connect(const ClientConfig& config) {
  auto channel = herd::rpc::MakeChannel({.target = config.endpoint, .ca_file = config.ca_file});
  if (!channel.ok()) return channel.status();
  return Client{config, herd::v1::DatasetService::NewStub(*channel)};
}

int Fail(const Client* client, const absl::Status& status) {
  return FailCall(client ? &client->config : nullptr, status);
}

std::string ToJson(const google::protobuf::Message& message) { return MessageToJson(message); }

std::string FormatName(herd::v1::RecordFormat format) {
  if (format == herd::v1::RECORD_FORMAT_UNSPECIFIED) return "-";
  return std::string(
      datasets::FormatName(static_cast<datasets::RecordFormat>(static_cast<int>(format) - 1)));
}

std::string TimeText(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

void PrintProblems(const std::string& path, const herd::v1::ValidationReport& report) {
  for (const herd::v1::ValidationProblem& p : report.problems()) {
    std::cerr << path << ": "
              << datasets::DescribeProblem({.line = p.line(), .field = p.field(), .reason = p.reason()})
              << "\n";
  }
  const int64_t more = report.records_invalid() - report.problems_size();
  if (more > 0) std::cerr << path << ": ... and " << more << " more invalid records\n";
}

bool Transient(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kAborted ||
         status.code() == absl::StatusCode::kDeadlineExceeded;
}

// One UploadDataset stream from `offset` to the end of the file.
absl::StatusOr<herd::v1::Dataset> StreamFrom(const Client& client, std::ifstream& file,
                                             const std::string& upload_id, int64_t offset,
                                             int64_t size) {
  grpc::ClientContext context;
  // Validation reads the whole file (datasets.proto): 60 s + 20 s per GiB, plus the transfer at
  // a pessimistic 1 MiB/s.
  const double gib = static_cast<double>(size) / (1 << 30);
  client.Prepare(&context, absl::Seconds(120 + 20 * gib + static_cast<double>(size - offset) / (1 << 20)));
  herd::v1::Dataset answer;
  std::unique_ptr<grpc::ClientWriter<herd::v1::UploadDatasetRequest>> writer =
      client.stub->UploadDataset(&context, &answer);
  herd::v1::UploadDatasetRequest message;
  message.mutable_header()->set_upload_id(upload_id);
  bool open = writer->Write(message);
  file.clear();
  file.seekg(offset);
  std::string buffer;
  while (open && offset < size) {
    buffer.resize(static_cast<size_t>(std::min(kChunkBytes, size - offset)));
    if (!file.read(buffer.data(), static_cast<std::streamsize>(buffer.size()))) {
      context.TryCancel();
      (void)writer->Finish();
      return absl::DataLossError("the file got shorter while uploading it");
    }
    message.mutable_chunk()->set_offset(offset);
    message.mutable_chunk()->set_data(buffer);
    open = writer->Write(message);
    offset += static_cast<int64_t>(buffer.size());
  }
  if (open) writer->WritesDone();
  absl::Status status = herd::rpc::FromGrpc(writer->Finish());
  if (!status.ok()) return status;
  return answer;
}

}  // namespace

namespace {

int Upload(const ClientConfig& config, const UploadOptions& options, bool json, std::string* dataset_id) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(options.path, ec);
  std::ifstream file(options.path, std::ios::binary);
  if (ec || !file) {
    std::cerr << "herd: cannot read " << options.path << (ec ? ": " + ec.message() : "") << "\n";
    return kNotFound;
  }
  if (size == 0) {
    std::cerr << "herd: " << options.path << " is empty\n";
    return kInvalid;
  }
  auto sha256 = Sha256File(options.path);
  if (!sha256.ok()) return Fail(nullptr, sha256.status());
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());

  herd::v1::StartUploadRequest start;
  start.set_name(options.name.empty() ? std::filesystem::path(options.path).filename().string()
                                      : options.name);
  start.set_skip_invalid(options.skip_invalid);
  start.set_total_size_bytes(static_cast<int64_t>(size));
  start.set_sha256(*sha256);

  std::string upload_id;
  absl::Status last;
  absl::Duration backoff = absl::Milliseconds(250);
  herd::v1::Dataset dataset;
  bool done = false;
  for (int attempt = 0; attempt < options.max_attempts && !done; ++attempt) {
    if (attempt > 0) {
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(backoff));
      backoff = std::min(backoff * 2, absl::Seconds(8));
    }
    // Where to start: StartUpload returns the open session for this file (a resume after a
    // crash of the CLI), QueryUpload the committed offset after a broken stream.
    herd::v1::Upload upload;
    grpc::ClientContext context;
    client->Prepare(&context, kCallDeadline);
    if (upload_id.empty()) {
      last = herd::rpc::FromGrpc(client->stub->StartUpload(&context, start, &upload));
    } else {
      herd::v1::QueryUploadRequest query;
      query.set_upload_id(upload_id);
      last = herd::rpc::FromGrpc(client->stub->QueryUpload(&context, query, &upload));
    }
    if (!last.ok()) {
      if (Transient(last)) continue;
      return Fail(&*client, last);
    }
    upload_id = upload.upload_id();
    if (upload.has_result()) {
      dataset = upload.result();
      done = true;
      break;
    }
    if (upload.committed_offset() > 0) {
      std::cerr << "herd: resuming " << options.path << " at byte " << upload.committed_offset()
                << " of " << size << "\n";
    }
    auto answer = StreamFrom(*client, file, upload_id, upload.committed_offset(),
                             static_cast<int64_t>(size));
    if (answer.ok()) {
      dataset = *std::move(answer);
      done = true;
    } else if (!Transient(answer.status())) {
      return Fail(&*client, answer.status());
    } else {
      last = answer.status();
    }
  }
  if (!done) return Fail(&*client, last);

  if (json) std::cout << ToJson(dataset) << "\n";
  const herd::v1::ValidationReport& report = dataset.validation();
  if (dataset.state() != herd::v1::DATASET_STATE_READY) {
    PrintProblems(options.path, report);
    std::cerr << "herd: " << options.path << " rejected: " << report.records_invalid()
              << " invalid of " << report.records_total() << " records"
              << (report.records_accepted() > 0 ? " (use --skip-invalid to keep the valid ones)" : "")
              << "; nothing was stored\n";
    return kInvalid;
  }
  if (report.records_invalid() > 0) PrintProblems(options.path, report);
  std::cerr << "herd: " << dataset.record_count() << " records (" << FormatName(dataset.format())
            << ")" << (report.records_invalid() > 0
                           ? StrCat(", ", report.records_invalid(), " invalid records dropped")
                           : "")
            << "\n";
  if (dataset_id != nullptr) {
    *dataset_id = dataset.id();
  } else if (!json) {
    std::cout << dataset.id() << "\n";
  }
  return kOk;
}

}  // namespace

int UploadDataset(const ClientConfig& config, const UploadOptions& options, bool json) {
  return Upload(config, options, json, nullptr);
}

int UploadDatasetForJob(const ClientConfig& config, const UploadOptions& options, std::string* dataset_id) {
  return Upload(config, options, /*json=*/false, dataset_id);
}

int ListDatasets(const ClientConfig& config, bool json) {
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  herd::v1::ListDatasetsRequest request;
  request.set_page_size(1000);
  std::vector<herd::v1::Dataset> all;
  do {
    grpc::ClientContext context;
    client->Prepare(&context, kCallDeadline);
    herd::v1::ListDatasetsResponse page;
    absl::Status s = herd::rpc::FromGrpc(client->stub->ListDatasets(&context, request, &page));
    if (!s.ok()) return Fail(&*client, s);
    for (const auto& d : page.datasets()) all.push_back(d);
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (json) {
    PrintJsonArray(all);
    return kOk;
  }
  std::printf("%-32s %-32s %10s %-18s %12s  %s\n", "ID", "NAME", "RECORDS", "FORMAT", "BYTES",
              "CREATED");
  for (const auto& d : all) {
    std::printf("%-32s %-32s %10lld %-18s %12lld  %s\n", d.id().c_str(), d.name().c_str(),
                static_cast<long long>(d.record_count()), FormatName(d.format()).c_str(),
                static_cast<long long>(d.size_bytes()), TimeText(d.create_time()).c_str());
  }
  return kOk;
}

int GetDataset(const ClientConfig& config, const std::string& id, bool json) {
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  grpc::ClientContext context;
  client->Prepare(&context, kCallDeadline);
  herd::v1::GetDatasetRequest request;
  request.set_id(id);
  herd::v1::Dataset d;
  absl::Status s = herd::rpc::FromGrpc(client->stub->GetDataset(&context, request, &d));
  if (!s.ok()) return Fail(&*client, s);
  if (json) {
    std::cout << ToJson(d) << "\n";
    return kOk;
  }
  std::cout << "id: " << d.id() << "\nname: " << d.name() << "\nformat: " << FormatName(d.format())
            << "\nrecords: " << d.record_count() << "\ninvalid_records: "
            << d.validation().records_invalid() << "\nskip_invalid: "
            << (d.skip_invalid() ? "true" : "false") << "\nsize_bytes: " << d.size_bytes()
            << "\nsha256: " << d.sha256() << "\ncreated: " << TimeText(d.create_time()) << "\n";
  return kOk;
}

int DeleteDataset(const ClientConfig& config, const std::string& id) {
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  grpc::ClientContext context;
  client->Prepare(&context, kCallDeadline);
  herd::v1::DeleteDatasetRequest request;
  request.set_id(id);
  google::protobuf::Empty empty;
  absl::Status s = herd::rpc::FromGrpc(client->stub->DeleteDataset(&context, request, &empty));
  if (!s.ok()) return Fail(&*client, s);
  std::cout << "deleted " << id << "\n";
  return kOk;
}

}  // namespace herd::cli
