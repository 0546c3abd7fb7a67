import Yams

/// One step into a YAML document: a mapping key or a sequence index.
package enum FieldPathComponent: Hashable, Sendable {
    case key(String)
    case index(Int)
}

/// A path to a field, printed as `clusters[0].gateways[1].address`.
package struct FieldPath: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
    package var components: [FieldPathComponent]

    package init(_ components: [FieldPathComponent]) { self.components = components }
    package init(arrayLiteral elements: FieldPathComponent...) { self.components = elements }

    init(codingPath: [any CodingKey]) {
        components = codingPath.map { key in
            if let index = key.intValue { .index(index) } else { .key(key.stringValue) }
        }
    }

    package func key(_ key: String) -> FieldPath { FieldPath(components + [.key(key)]) }
    package func index(_ index: Int) -> FieldPath { FieldPath(components + [.index(index)]) }

    package var description: String {
        var text = ""
        for component in components {
            switch component {
            case .key(let key): text += text.isEmpty ? key : ".\(key)"
            case .index(let index): text += "[\(index)]"
            }
        }
        return text
    }
}

/// Line and column of every node of a YAML document, so models carry no positions and errors
/// found after decoding still point at the right place (Yams `Node.mark`).
package struct SourceMap {
    package var file: String
    package var root: Node?
    /// Where `root` sits in `file` when it was parsed from text embedded in it (the mesh config
    /// in an `istio` ConfigMap): added to every position.
    package var lineOffset = 0, columnOffset = 0

    package init(file: String, root: Node?, lineOffset: Int = 0, columnOffset: Int = 0) {
        self.file = file; self.root = root; self.lineOffset = lineOffset; self.columnOffset = columnOffset
    }

    /// The mark of the deepest node on `path` that exists: a missing field points at the
    /// mapping that should have held it.
    package func mark(of path: FieldPath) -> Mark? {
        guard var node = root else { return nil }
        var mark = node.mark
        for component in path.components {
            switch component {
            case .key(let key):
                guard let mapping = node.mapping, let child = mapping[Node(key)] else { return mark }
                // Point at the key: that is the line a user looks for.
                let keyMark = mapping.keys.first(where: { $0.string == key })?.mark
                mark = keyMark ?? child.mark ?? mark
                node = child
            case .index(let index):
                guard let sequence = node.sequence, index < sequence.count else { return mark }
                node = sequence[index]
                mark = node.mark ?? mark
            }
        }
        return mark
    }

    package func error(_ code: ConfigError.Code, at path: FieldPath, _ message: String) -> ConfigError {
        let mark = mark(of: path)
        var error = ConfigError(code: code, file: file, line: mark.map { $0.line + lineOffset } ?? 0, column: mark.map { $0.column + columnOffset } ?? 0,
                                field: path.description, message: message)
        error.fieldPath = path
        return error
    }
}
