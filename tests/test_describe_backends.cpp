// describe_backends(): the text users and bug reports rely on names every operation each backend
// runs (a stale CUDA line once left out the sparse kernels).
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "flashmla/flashmla.h"

namespace flashmla::test {
namespace {

std::string line_starting(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) return line;
  return "";
}

TEST(DescribeBackends, NamesEveryOperationOfEachBackend) {
  const std::string text = describe_backends();
  const std::string cpu = line_starting(text, "  cpu:");
  for (const char* op : {"dense_decode", "sparse_decode (V3.2, MODEL1)", "sparse_prefill",
                         "mha_varlen_fwd", "mha_varlen_bwd", "kv_quantize", "kv_dequantize"})
    EXPECT_NE(cpu.find(op), std::string::npos) << op << " missing from: " << cpu;
  if (!built_with_cuda()) {
    EXPECT_NE(text.find("cuda: not built"), std::string::npos) << text;
    return;
  }
  const std::string cuda = line_starting(text, "  cuda (sm_90a kernels):");
  for (const char* op : {"dense_decode", "sparse_decode (V3.2, MODEL1)", "sparse_prefill",
                         "kv_quantize", "kv_dequantize"})
    EXPECT_NE(cuda.find(op), std::string::npos) << op << " missing from: " << cuda;
  for (const char* op : {"mha_varlen_fwd", "mha_varlen_bwd"}) {
    EXPECT_EQ(cuda.find(op), std::string::npos) << "not a default CUDA kernel yet: " << cuda;
    const std::string opt_in = line_starting(text, "  cuda, opt-in");
    EXPECT_NE(opt_in.find(op), std::string::npos) << op << " missing from: " << opt_in;
  }
}

}  // namespace
}  // namespace flashmla::test
