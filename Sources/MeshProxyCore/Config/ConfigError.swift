/// A problem in a user's config file. `description` is exactly what the CLI prints, in the
/// `FILE:LINE:COLUMN: error: FIELD: MESSAGE` form editors and CI can jump to.
package struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    package struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        package static let unreadableFile = Code(name: "unreadable-file")
        package static let malformedYAML = Code(name: "malformed-yaml")
        package static let missingField = Code(name: "missing-field")
        package static let wrongType = Code(name: "wrong-type")
        package static let unknownField = Code(name: "unknown-field")
        package static let invalidValue = Code(name: "invalid-value")
        package static let duplicate = Code(name: "duplicate")
        /// A valid Istio field EastWest does not carry out yet, or an Istio-incompatible choice.
        package static let notImplemented = Code(name: "not-implemented")
        package static let istioDifference = Code(name: "istio-difference")
        package var description: String { name }
    }

    package var code: Code
    /// The file as the user named it.
    package var file: String
    /// 1-based; 0 when the problem has no position (an unreadable file).
    package var line: Int
    package var column: Int
    /// `clusters[0].gateways[1].address`; empty for whole-file problems.
    package var field: String
    package var message: String
    /// The field as a path, for callers that judge problems by where they are.
    package var fieldPath: FieldPath = []
    /// A warning loads; an error does not.
    package var isWarning = false

    package init(code: Code, file: String, line: Int = 0, column: Int = 0, field: String = "", message: String) {
        self.code = code; self.file = file; self.line = line; self.column = column
        self.field = field; self.message = message
    }

    package var asWarning: ConfigError { var copy = self; copy.isWarning = true; return copy }

    package var description: String {
        let position = line > 0 ? "\(file):\(line):\(column)" : file
        let severity = isWarning ? "warning" : "error"
        return field.isEmpty ? "\(position): \(severity): \(message)" : "\(position): \(severity): \(field): \(message)"
    }
}

/// Every problem found in one load, reported together rather than one per run.
package struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    package var errors: [ConfigError]
    package init(_ errors: [ConfigError]) { self.errors = errors }
    package var description: String { errors.map(\.description).joined(separator: "\n") }
}
