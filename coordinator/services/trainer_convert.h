// Conversions and one status rule shared by the TrainerService files (trainer_service.cc,
// trainer_work.cc): assignments between the scheduler's structs and herd.v1.
#ifndef HERD_COORDINATOR_SERVICES_TRAINER_CONVERT_H_
#define HERD_COORDINATOR_SERVICES_TRAINER_CONVERT_H_

#include <string_view>

#include "absl/status/status.h"
#include "coordinator/registry.h"
#include "herd/v1/trainers.pb.h"

namespace herd::coordinator::services {

AssignmentRef FromProto(const herd::v1::AssignmentRef& ref);
void ToProto(const AssignmentRef& ref, herd::v1::AssignmentRef* out);
// The scheduling part of an assignment (TrainerService::FillAssignment adds the job's part).
void ToProto(const Assignment& a, herd::v1::Assignment* out);
// UNAVAILABLE ("retry") for a scheduler outcome that could not be written, logged.
absl::Status Unrecorded(std::string_view what, const absl::Status& status);

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_TRAINER_CONVERT_H_
