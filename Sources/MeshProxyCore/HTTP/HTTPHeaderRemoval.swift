import NIOHTTP1

extension HTTPHeaders {
    /// Removes every header named in `names` (ignoring case). NIO's `remove(name:)` rewrites
    /// its storage even when the name is absent (and copies it first when shared, as a request
    /// head's headers are); looking first costs a read per name, and the names a gateway strips
    /// from every request and response are almost always absent.
    mutating func removeAll(named names: [String]) {
        for name in names where contains(name: name) { remove(name: name) }
    }

    /// `remove(name:)` that writes only when the header is there.
    mutating func removeIfPresent(_ name: String) {
        if contains(name: name) { remove(name: name) }
    }
}
