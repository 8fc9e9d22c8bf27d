// Typed errors. Every check in the library stays on in release builds and throws one of these;
// nothing calls assert() or exit(). Messages name the operation, the argument, what was
// expected and what was given, e.g.
//   flashmla::dense_decode: argument 'q': expected rank 4 [b, s_q, h_q, d_qk], got rank 3 [2, 1, 576]
#pragma once

#include <stdexcept>
#include <string>

namespace flashmla {

enum class ErrorKind {
  kValue,           // wrong shape, stride, layout or value (Python: ValueError)
  kType,            // wrong dtype (Python: TypeError)
  kNotImplemented,  // operation/feature has no implementation on that device (NotImplementedError)
  kCuda,            // a CUDA runtime/driver call failed (RuntimeError)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// A bad argument. `argument()` is the parameter's name as in the params struct (and in
// FlashMLA's Python API), so bindings can re-raise with the same name.
class ArgumentError : public Error {
 public:
  ArgumentError(ErrorKind kind, std::string op, std::string argument, const std::string& detail)
      : Error(kind, "flashmla::" + op + ": argument '" + argument + "': " + detail),
        op_(std::move(op)), argument_(std::move(argument)) {}
  const std::string& op() const { return op_; }
  const std::string& argument() const { return argument_; }

 private:
  std::string op_;
  std::string argument_;
};

class NotImplementedError : public Error {
 public:
  explicit NotImplementedError(const std::string& message)
      : Error(ErrorKind::kNotImplemented, message) {}
};

class CudaError : public Error {
 public:
  explicit CudaError(const std::string& message) : Error(ErrorKind::kCuda, message) {}
};

}  // namespace flashmla
