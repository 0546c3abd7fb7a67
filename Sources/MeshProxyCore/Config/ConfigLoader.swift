import Foundation
import Yams

/// Loads one of our YAML files in the two steps that can fail: decode (shape) and the type's
/// own validation (meaning). Every problem comes back as a `ConfigError` with file, line,
/// column and field; nothing half-loaded escapes.
package enum ConfigLoader {
    package static func load<T: Codable & ConfigValidatable>(_ type: T.Type, file: String) throws(ConfigErrors) -> T {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw ConfigErrors([ConfigError(code: .unreadableFile, file: file, message: "cannot read file: \((error as NSError).localizedDescription)")])
        }
        return try load(type, yaml: text, file: file)
    }

    package static func load<T: Codable & ConfigValidatable>(_ type: T.Type, yaml: String, file: String) throws(ConfigErrors) -> T {
        let (value, map) = try decode(type, yaml: yaml, file: file)
        let problems = value.validate(map)
        guard problems.isEmpty else { throw ConfigErrors(problems) }
        return value
    }

    /// Decodes without the type's validation. Unknown keys are errors: a typo such as
    /// `endpionts:` must not silently drop a cluster's endpoints.
    package static func decode<T: Codable>(_ type: T.Type, yaml: String, file: String) throws(ConfigErrors) -> (T, SourceMap) {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigErrors([yamlError(error, file: file)])
        } catch {
            throw ConfigErrors([ConfigError(code: .malformedYAML, file: file, message: "\(error)")])
        }
        let map = SourceMap(file: file, root: node)
        guard let node else {
            throw ConfigErrors([ConfigError(code: .missingField, file: file, message: "the file is empty")])
        }
        let value: T
        do {
            value = try YAMLDecoder().decode(type, from: node)
        } catch let error as DecodingError {
            throw ConfigErrors([decodingError(error, map: map)])
        } catch let error as YamlError {
            throw ConfigErrors([yamlError(error, file: file)])
        } catch {
            throw ConfigErrors([ConfigError(code: .invalidValue, file: file, message: "\(error)")])
        }
        var unknown: [ConfigError] = []
        if let encoded = try? Yams.compose(yaml: YAMLEncoder().encode(value)) {
            findUnknownKeys(source: node, known: encoded, path: [], map: map, into: &unknown)
        }
        guard unknown.isEmpty else { throw ConfigErrors(unknown) }
        return (value, map)
    }

    /// Decodes one node of a larger document (an Istio object's `spec`), with errors pointing
    /// at `prefix` + the field. Unknown keys come back as paths for the caller to judge.
    package static func decode<T: Codable>(_ type: T.Type, node: Node, map: SourceMap,
                                           at prefix: FieldPath) -> Result<(T, unknownKeys: [FieldPath]), ConfigError> {
        let value: T
        do {
            value = try YAMLDecoder().decode(type, from: node)
        } catch let error as DecodingError {
            return .failure(decodingError(error, map: map, prefix: prefix))
        } catch {
            return .failure(map.error(.invalidValue, at: prefix, "\(error)"))
        }
        var unknown: [ConfigError] = []
        if let encoded = try? Yams.compose(yaml: YAMLEncoder().encode(value)) {
            findUnknownKeys(source: node, known: encoded, path: prefix, map: map, into: &unknown)
        }
        return .success((value, unknown.map(\.fieldPath)))
    }

    /// A key the model did not keep is a key it does not know: re-encoding the decoded value
    /// gives exactly the keys the model understood.
    private static func findUnknownKeys(source: Node, known: Node, path: FieldPath, map: SourceMap, into errors: inout [ConfigError]) {
        switch (source, known) {
        case (.mapping(let s), .mapping(let k)):
            for (key, value) in s {
                guard let name = key.string else { continue }
                if let knownValue = k[key] {
                    findUnknownKeys(source: value, known: knownValue, path: path.key(name), map: map, into: &errors)
                } else if value.null == nil {  // `key:` with no value decodes to nil and re-encodes to nothing
                    let expected = k.keys.compactMap(\.string).sorted().joined(separator: ", ")
                    errors.append(map.error(.unknownField, at: path.key(name), "unknown field '\(name)'" + (expected.isEmpty ? "" : " (known here: \(expected))")))
                }
            }
        case (.sequence(let s), .sequence(let k)):
            for (index, (a, b)) in zip(s, k).enumerated() {
                findUnknownKeys(source: a, known: b, path: path.index(index), map: map, into: &errors)
            }
        default:
            break
        }
    }

    private static func decodingError(_ error: DecodingError, map: SourceMap, prefix: FieldPath = []) -> ConfigError {
        func path(_ codingPath: [any CodingKey]) -> FieldPath { FieldPath(prefix.components + FieldPath(codingPath: codingPath).components) }
        switch error {
        case .keyNotFound(let key, let context):
            return map.error(.missingField, at: path(context.codingPath).key(key.stringValue),
                             "missing required field '\(key.stringValue)'")
        case .typeMismatch(let type, let context):
            return map.error(.wrongType, at: path(context.codingPath), "expected \(describe(type))")
        case .valueNotFound(let type, let context):
            return map.error(.missingField, at: path(context.codingPath), "expected \(describe(type)), found nothing")
        case .dataCorrupted(let context):
            return map.error(.invalidValue, at: path(context.codingPath), context.debugDescription)
        @unknown default:
            return ConfigError(code: .invalidValue, file: map.file, message: "\(error)")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type: "a whole number"
        case is Bool.Type: "true or false"
        case is Double.Type: "a number"
        default:
            String(describing: type).hasPrefix("Array") ? "a list" : "a mapping"
        }
    }

    static func yamlError(_ error: YamlError, file: String) -> ConfigError {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let text = [context?.text, problem].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ": ")
            return ConfigError(code: .malformedYAML, file: file, line: mark.line, column: mark.column, message: "invalid YAML: \(text)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ConfigError(code: .duplicate, file: file, line: context.mark.line, column: context.mark.column,
                               message: "duplicate key(s) \(duplicates.joined(separator: ", ")) in one mapping")
        default:
            return ConfigError(code: .malformedYAML, file: file, message: "invalid YAML: \(error)")
        }
    }
}

/// Cross-field checks a decoded config must pass before anything uses it.
package protocol ConfigValidatable {
    func validate(_ map: SourceMap) -> [ConfigError]
}

extension Decoder {
    /// A scalar read as text and parsed; text that does not parse is an error at its position
    /// saying what was expected (`problem`, given the text).
    func parsedString<Value>(_ parse: (String) -> Value?, _ problem: (String) -> String) throws -> Value {
        let text = try singleValueContainer().decode(String.self)
        guard let value = parse(text) else { throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: problem(text))) }
        return value
    }
}
