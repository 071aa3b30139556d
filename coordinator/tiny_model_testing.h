// For the coordinator's tests that need a real model's metadata (tokenizer, config): the tiny LLaMA
// of herd-make-tiny-model, made once per test binary (the binary's CMake target defines
// HERD_MAKE_TINY_MODEL), and published to a store as a trainer's registration would.
#ifndef HERD_COORDINATOR_TINY_MODEL_TESTING_H_
#define HERD_COORDINATOR_TINY_MODEL_TESTING_H_

#include <stdlib.h>

#include <filesystem>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "common/file_util.h"
#include "common/strings.h"
#include "common/subprocess.h"
#include "coordinator/store/store.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator::test_models {

// The model's folder, made on first use in a temporary folder that is removed when the binary exits.
inline absl::StatusOr<std::string> TinyModelDir() {
  struct Folder {
    std::string root;
    absl::StatusOr<std::string> model = absl::InternalError("not made");
    ~Folder() {
      std::error_code ec;
      if (!root.empty()) std::filesystem::remove_all(root, ec);
    }
  };
  static Folder folder = [] {
    Folder f;
    std::string tmpl = (std::filesystem::temp_directory_path() / "herd-tiny-model-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      f.model = absl::InternalError("mkdtemp failed");
      return f;
    }
    f.root = tmpl;
    const std::string dir = f.root + "/tiny-llama";
    auto made = RunSubprocess({.argv = {HERD_MAKE_TINY_MODEL, "--out", dir}});
    if (!made.ok()) {
      f.model = made.status();
    } else if (!made->ok()) {
      f.model = absl::InternalError(StrCat("herd-make-tiny-model failed: ", made->stderr_text));
    } else {
      f.model = dir;
    }
    return f;
  }();
  return folder.model;
}

// The model's files but its weights, by file name: what a trainer publishes.
inline std::map<std::string, std::string> TinyModelMetadataFiles(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.find(".safetensors") == std::string::npos) files[name] = entry.path().string();
  }
  return files;
}

// Publishes the tiny model's metadata files as model `name`, as registration does; a non-empty
// `chat_template` replaces the one in tokenizer_config.json.
inline absl::Status PublishTinyModel(store::Store& store, const std::string& name,
                                     const std::string& chat_template = "") {
  auto dir = TinyModelDir();
  if (!dir.ok()) return dir.status();
  store::ModelRecord model{.name = name, .weights_sha256 = std::string(64, 'a'), .weights_size_bytes = 1};
  for (const auto& [file, path] : TinyModelMetadataFiles(*dir)) {
    absl::StatusOr<store::BlobRef> blob;
    if (file == "tokenizer_config.json" && !chat_template.empty()) {
      auto text = ReadFile(path);
      if (!text.ok()) return text.status();
      nlohmann::json j = nlohmann::json::parse(*text);
      j["chat_template"] = chat_template;
      blob = store.blobs().Put(j.dump());
    } else {
      blob = store.blobs().PutFile(path);
    }
    if (!blob.ok()) return blob.status();
    model.files.push_back({.name = file, .blob = *blob});
  }
  return store.trainers().PutModel(model, /*replace=*/true).status();
}

}  // namespace herd::coordinator::test_models

#endif  // HERD_COORDINATOR_TINY_MODEL_TESTING_H_
