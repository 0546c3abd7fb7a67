/// The endpoint list `eastwest plan` reads:
/// `endpoints: [{address, locality: "region/zone/subzone", labels: {…}, healthy: true|false}]`.
package struct EndpointsFile: Codable, Sendable, Equatable {
    package struct Entry: Codable, Sendable, Equatable {
        package var address: String?
        package var locality: String
        package var labels: [String: String]?
        /// Default true.
        package var healthy: Bool?
    }
    package var endpoints: [Entry]

    package init(endpoints: [Entry] = []) {
        self.endpoints = endpoints
    }

    package var planned: [PlannedEndpoint] {
        endpoints.map { PlannedEndpoint(locality: $0.locality, labels: $0.labels ?? [:], healthy: $0.healthy ?? true) }
    }
}

extension EndpointsFile: ConfigValidatable {
    package func validate(_ map: SourceMap) -> [ConfigError] {
        endpoints.enumerated().compactMap { i, entry in
            Locality(parsing: entry.locality) == nil || entry.locality.isEmpty
                ? map.error(.invalidValue, at: FieldPath().key("endpoints").index(i).key("locality"),
                            "'\(entry.locality)' is not a locality of the form region/zone/subzone")
                : nil
        }
    }
}
