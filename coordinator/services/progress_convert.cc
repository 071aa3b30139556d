// ProgressBoard's JobProgressView -> herd.v1.JobProgress (declared in job_convert.h), for GetJob
// and WatchJob, and the board's view into a Job.
#include <google/protobuf/util/json_util.h>

#include "coordinator/progress_board.h"
#include "nlohmann/json.hpp"
#include "coordinator/services/convert.h"
#include "coordinator/services/job_convert.h"

namespace herd::coordinator::services {

void ToProto(const JobProgressView& in, herd::v1::JobProgress* out) {
  out->Clear();
  out->set_step(in.step);
  out->set_total_steps(in.total_steps);
  out->set_epoch(in.epoch);
  if (in.loss) out->set_loss(*in.loss);
  out->set_learning_rate(in.learning_rate);
  out->set_tokens_per_second(in.tokens_per_second);
  out->set_trained_tokens(in.trained_tokens);
  if (in.eval_loss) out->set_eval_loss(*in.eval_loss);
  if (in.eval_token_accuracy) out->set_eval_token_accuracy(*in.eval_token_accuracy);
  // No point has arrived yet (only total_steps is known): leave the time unset.
  if (in.update_time != absl::Time()) ToTimestamp(in.update_time, out->mutable_update_time());
}

int64_t SetLiveProgress(const ProgressBoard* board, herd::v1::Job* job) {
  if (board == nullptr) return 0;
  std::optional<JobProgressView> view = board->Get(job->id());
  if (!view) return 0;
  ToProto(*view, job->mutable_progress());
  return view->version;
}

std::string ProgressSnapshotJson(const JobProgressView& view) {
  herd::v1::JobProgress proto;
  ToProto(view, &proto);
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(proto, &text, options).ok()) text = "{}";
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) j = nlohmann::json::object();
  nlohmann::json history = nlohmann::json::array();
  for (const auto& [step, loss] : view.loss_history) history.push_back({step, loss});
  j["loss_history"] = std::move(history);
  return j.dump();
}

void SetLossHistory(const ProgressBoard* board, const std::string& progress_json, herd::v1::Job* job) {
  job->clear_loss_history();
  if (board != nullptr) {
    if (std::optional<JobProgressView> view = board->Get(job->id()); view && !view->loss_history.empty()) {
      for (const auto& [step, loss] : view->loss_history) {
        herd::v1::LossPoint* p = job->add_loss_history();
        p->set_step(step);
        p->set_loss(loss);
      }
      return;
    }
  }
  nlohmann::json j = nlohmann::json::parse(progress_json, nullptr, false);
  if (!j.is_object() || !j.contains("loss_history") || !j["loss_history"].is_array()) return;
  for (const nlohmann::json& point : j["loss_history"]) {
    if (!point.is_array() || point.size() != 2 || !point[0].is_number_integer() || !point[1].is_number()) continue;
    herd::v1::LossPoint* p = job->add_loss_history();
    p->set_step(point[0].get<int64_t>());
    p->set_loss(point[1].get<double>());
  }
}

}  // namespace herd::coordinator::services
