// FrugalError: the typed errors Frugal reports, each one clear line for the user.

/// An error with a one-line message that names the file or object and the problem.
public enum FrugalError: Error, CustomStringConvertible, Equatable {
    /// A file could not be read or is malformed: file, what, and byte offset when known.
    case malformedFile(path: String, problem: String, offset: Int? = nil)
    /// A model whose architecture Frugal does not implement.
    case unsupportedArchitecture(path: String, found: String)
    /// A required file is missing.
    case missingFile(path: String, what: String)
    /// A tensor a model needs is absent from its weights.
    case missingTensor(name: String, path: String)
    /// A tensor has the wrong shape.
    case shapeMismatch(name: String, expected: Shape, found: Shape)
    /// An unsupported dtype for an operation.
    case unsupportedDType(DType, operation: String)
    /// Bad user input (options, configuration).
    case invalidArgument(String)
    /// Training hit non-finite numbers: at which step, and where.
    case numericalFault(step: Int, detail: String)

    public var description: String {
        switch self {
        case let .malformedFile(path, problem, offset):
            if let offset { return "\(path): \(problem) (at byte \(offset))" }
            return "\(path): \(problem)"
        case let .unsupportedArchitecture(path, found):
            return "\(path): unsupported model architecture '\(found)' (supported: llama, mistral, qwen2, gemma, phi3, opt, gpt2)"
        case let .missingFile(path, what):
            return "\(path): missing \(what)"
        case let .missingTensor(name, path):
            return "\(path): missing tensor '\(name)'"
        case let .shapeMismatch(name, expected, found):
            return "tensor '\(name)': expected shape \(expected), found \(found)"
        case let .unsupportedDType(dtype, operation):
            return "\(operation) does not support dtype \(dtype.rawValue)"
        case let .invalidArgument(message):
            return message
        case let .numericalFault(step, detail):
            return "step \(step): \(detail)"
        }
    }
}
