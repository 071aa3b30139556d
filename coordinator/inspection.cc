// Inspector: herd-prepare --dump-examples as a child over the model's published files.
#include "coordinator/inspection.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/preparation.h"
#include "common/subprocess.h"
#include "coordinator/store/store.h"
#include "datasets/examples.h"
#include "datasets/records.h"
#include "datasets/tokenizer.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A fresh folder under `root` that the destructor removes with everything in it.
class Scratch {
 public:
  static absl::StatusOr<Scratch> Make(const std::string& root) {
    std::error_code ec;
    fs::create_directories(root, ec);
    if (ec) return absl::UnavailableError(StrCat("cannot create ", root, ": ", ec.message()));
    std::string pattern = StrCat(root, "/inspect-XXXXXX");
    if (::mkdtemp(pattern.data()) == nullptr) {
      return absl::UnavailableError(StrCat("cannot create a folder under ", root, ": ", std::strerror(errno)));
    }
    return Scratch(std::move(pattern));
  }
  Scratch(Scratch&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch& operator=(Scratch&&) = delete;
  ~Scratch() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  explicit Scratch(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// The model's chat template must be one Herd renders before chat records can be shown; the
// tokenizer_config.json blob says, without running anything.
absl::Status CheckChatTemplate(const store::Store& store, const std::string& model,
                               const std::map<std::string, std::string>& files) {
  std::string jinja;
  if (auto it = files.find("tokenizer_config.json"); it != files.end()) {
    HERD_ASSIGN_OR_RETURN(std::string text, store.blobs().Read(it->second));
    HERD_ASSIGN_OR_RETURN(datasets::TokenizerConfig config,
                          datasets::ParseTokenizerConfig(text, StrCat(model, "/tokenizer_config.json")));
    jinja = config.chat_template;
  }
  absl::StatusOr<datasets::ChatTemplate> t = datasets::DetectChatTemplate(jinja);
  if (!t.ok()) return absl::FailedPreconditionError(StrCat(model, ": ", t.status().message()));
  return absl::OkStatus();
}

}  // namespace

absl::Status InspectorOptions::Validate() const {
  if (store == nullptr) return absl::FailedPreconditionError("inspection is not configured on this coordinator");
  if (herd_prepare.empty()) return absl::FailedPreconditionError("inspection: no herd-prepare program configured");
  if (work_dir.empty()) return absl::FailedPreconditionError("inspection: no work folder configured");
  if (timeout <= absl::ZeroDuration()) return absl::InvalidArgumentError("inspection: timeout must be positive");
  return absl::OkStatus();
}

absl::StatusOr<Inspection> Inspector::Inspect(const store::DatasetRecord& dataset,
                                              const InspectRequest& request) const {
  HERD_RETURN_IF_ERROR(options_.Validate());
  if (request.model.empty()) return absl::InvalidArgumentError("model: must not be empty");
  if (request.limit < 1) return absl::InvalidArgumentError("limit: must be at least 1");
  if (request.max_seq_len < 0) return absl::InvalidArgumentError("max_seq_len: must not be negative");
  const std::string format = request.format.empty() ? dataset.format : request.format;
  if (!datasets::ParseFormatName(format)) return absl::InvalidArgumentError(StrCat("format: unknown ", format));
  if (!request.chat_template.empty() && request.chat_template != "llama2" && request.chat_template != "llama3") {
    return absl::InvalidArgumentError(StrCat("chat_template: unknown ", request.chat_template));
  }

  store::Store& store = *options_.store;
  auto model = store.trainers().GetModel(request.model);
  if (absl::IsNotFound(model.status())) {
    return absl::NotFoundError(
        StrCat("model: no trainer has published a model named ", request.model, " (see `herd models list`)"));
  }
  HERD_RETURN_IF_ERROR(model.status());
  std::map<std::string, std::string> sha_by_name;
  for (const store::NamedBlob& f : model->files) sha_by_name[f.name] = f.blob.sha256;
  if (format == "chat" && request.chat_template.empty()) {
    HERD_RETURN_IF_ERROR(CheckChatTemplate(store, request.model, sha_by_name));
  }

  HERD_ASSIGN_OR_RETURN(Scratch scratch, Scratch::Make(options_.work_dir));
  // The model directory herd-prepare reads: links to the published files (as Preparer::Prepare).
  const std::string model_dir = StrCat(scratch.path(), "/model");
  std::error_code ec;
  fs::create_directories(model_dir, ec);
  if (ec) return absl::UnavailableError(StrCat("cannot create ", model_dir, ": ", ec.message()));
  for (const auto& [name, sha256] : sha_by_name) {
    if (name.find('/') != std::string::npos || name == ".." || name == ".") {
      return absl::InternalError(StrCat("model file name ", name, " is not a plain name"));
    }
    fs::create_symlink(store.blobs().PathOf(sha256), StrCat(model_dir, "/", name), ec);
    if (ec) return absl::UnavailableError(StrCat("cannot link ", name, " into ", model_dir, ": ", ec.message()));
  }

  const std::string dump = StrCat(scratch.path(), "/examples.jsonl");
  std::vector<std::string> argv = {options_.herd_prepare, "--data", store.blobs().PathOf(dataset.sha256),
                                   "--model", model_dir, "--dump-examples", dump, "--pieces",
                                   "--limit", StrCat(request.limit), "--format", format,
                                   "--chat-template", request.chat_template.empty() ? "auto" : request.chat_template};
  if (request.train_on_inputs) argv.push_back("--train-on-inputs");
  if (request.max_seq_len > 0) argv.insert(argv.end(), {"--max-seq-len", StrCat(request.max_seq_len)});
  if (dataset.skip_invalid) argv.push_back("--skip-invalid");
  HERD_ASSIGN_OR_RETURN(SubprocessResult r, RunSubprocess({.argv = argv, .timeout = options_.timeout}));
  if (!r.ok()) {
    // herd-prepare's exit codes follow DESIGN.md §11: 2 = the input is at fault.
    if (r.exit_code == 2 || r.exit_code == 3) return absl::InvalidArgumentError(PrepareFailureReason(r));
    return absl::InternalError(PrepareFailureReason(r));
  }
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(dump));
  auto parsed = datasets::ParseExampleDump(text);
  // Our own child wrote something else than it should: a bug, not the caller's input.
  if (!parsed.ok()) return absl::InternalError(parsed.status().message());
  return parsed;
}

}  // namespace herd::coordinator
