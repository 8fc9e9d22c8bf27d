// The dense-decode metadata handed to Python: one int32 tensor [num_parts, cols] that packs
// the split-KV schedule (core/decode_schedule.h) and the scratch for split-KV partial results,
// so the workspace is allocated once, together with the schedule, and never in the run path.
//
//   flat int32 offsets     content
//   [0, sched_meta_elems)  the schedule written by dense_decode_plan()
//   [ws_begin, ws_end)     plan.workspace_bytes bytes of workspace; ws_begin = sched_meta_elems
//                          rounded up to kWorkspaceAlignElems (256 bytes), the tensor's rows
//                          padded so that num_parts * cols >= ws_end
//
// Row count = plan.num_parts mirrors FlashMLA's tile_scheduler_metadata
// [num_sm_parts, TileSchedulerMetaDataSize], and lets a call check cheaply (on the host, no
// device read) that the tensor was planned for the same number of parts.
#pragma once

#include <cstdint>

#include "core/decode_schedule.h"
#include "flashmla/params.h"

namespace flashmla::bindings {

inline constexpr int64_t kWorkspaceAlignElems = 64;  // 256 bytes of int32

struct DecodeMetadataLayout {
  int64_t sched_meta_elems;
  int64_t workspace_begin;   // int32 elements
  int64_t workspace_bytes;
  int64_t rows, cols;        // tensor shape
  int64_t num_splits_begin;  // int32 offset of the per-request split counts inside the schedule
};

inline DecodeMetadataLayout decode_metadata_layout(const DecodePlan& plan) {
  DecodeMetadataLayout m{};
  m.sched_meta_elems = plan.sched_meta_elems;
  m.workspace_begin =
      (plan.sched_meta_elems + kWorkspaceAlignElems - 1) / kWorkspaceAlignElems *
      kWorkspaceAlignElems;
  m.workspace_bytes = plan.workspace_bytes;
  const int64_t total = m.workspace_begin + (plan.workspace_bytes + 3) / 4;
  m.rows = plan.num_parts;
  m.cols = (total + m.rows - 1) / m.rows;
  m.num_splits_begin = sched::kHeaderElems + (plan.num_parts + 1) +
                       sched::kChunkElems * (plan.b + plan.num_parts);
  return m;
}

}  // namespace flashmla::bindings
