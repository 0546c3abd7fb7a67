import Yams

/// The part of Istio's MeshConfig (istio/api mesh/v1alpha1/config.proto) EastWest reads: the
/// `extensionProviders` an AuthorizationPolicy with `action: CUSTOM` names. Users keep it where
/// Istio does — the `istio` ConfigMap's `mesh` key (`kubectl edit configmap istio -n
/// istio-system`) or an IstioOperator's `spec.meshConfig` — and EastWest reads either from
/// `policies:`. Every other mesh field loads with a warning naming it.
package struct MeshConfig: Codable, Sendable, Equatable {
    package var extensionProviders: [ExtensionProvider]?

    package init(extensionProviders: [ExtensionProvider]? = nil) { self.extensionProviders = extensionProviders }

    /// One named provider. Only the ext-authz kinds are modelled; the telemetry kinds (zipkin,
    /// opentelemetry, prometheus, …) load with a warning.
    package struct ExtensionProvider: Codable, Sendable, Equatable {
        package var name: String
        package var envoyExtAuthzHttp: ExtAuthzHTTP?
        package var envoyExtAuthzGrpc: ExtAuthzGRPC?

        package init(name: String, envoyExtAuthzHttp: ExtAuthzHTTP? = nil, envoyExtAuthzGrpc: ExtAuthzGRPC? = nil) {
            self.name = name; self.envoyExtAuthzHttp = envoyExtAuthzHttp; self.envoyExtAuthzGrpc = envoyExtAuthzGrpc
        }
    }

    /// `EnvoyExternalAuthorizationHttpProvider`.
    package struct ExtAuthzHTTP: Codable, Sendable, Equatable {
        /// `[<namespace>/]<hostname>` of a service in the mesh.
        package var service: String
        package var port: ProtoUInt32
        package var timeout: ConfigDuration?
        package var pathPrefix: String?
        package var failOpen: Bool?
        /// An HTTP status code, as a string (`"403"` when absent).
        package var statusOnError: String?
        package var includeRequestHeadersInCheck: [String]?
        /// Deprecated; read when `includeRequestHeadersInCheck` is absent, as istiod does.
        package var includeHeadersInCheck: [String]?
        package var includeAdditionalHeadersInCheck: [String: String]?
        package var includeRequestBodyInCheck: RequestBody?
        package var headersToUpstreamOnAllow: [String]?
        package var headersToDownstreamOnAllow: [String]?
        package var headersToDownstreamOnDeny: [String]?

        package init(service: String, port: Int, timeout: ConfigDuration? = nil, pathPrefix: String? = nil, failOpen: Bool? = nil,
                     statusOnError: String? = nil, includeRequestHeadersInCheck: [String]? = nil,
                     headersToUpstreamOnAllow: [String]? = nil, headersToDownstreamOnAllow: [String]? = nil, headersToDownstreamOnDeny: [String]? = nil) {
            self.service = service; self.port = ProtoUInt32(port); self.timeout = timeout; self.pathPrefix = pathPrefix; self.failOpen = failOpen
            self.statusOnError = statusOnError; self.includeRequestHeadersInCheck = includeRequestHeadersInCheck
            self.headersToUpstreamOnAllow = headersToUpstreamOnAllow; self.headersToDownstreamOnAllow = headersToDownstreamOnAllow
            self.headersToDownstreamOnDeny = headersToDownstreamOnDeny
        }
    }

    /// `EnvoyExternalAuthorizationGrpcProvider`: Envoy's `Authorization/Check` over HTTP/2 to the
    /// service (`ExternalAuthorizationGRPC.swift`); on a TCP service its rules refuse, as Envoy's
    /// network ext_authz is not carried out.
    package struct ExtAuthzGRPC: Codable, Sendable, Equatable {
        package var service: String
        package var port: ProtoUInt32
        package var timeout: ConfigDuration?
        package var failOpen: Bool?
        package var statusOnError: String?
        package var includeRequestBodyInCheck: RequestBody?

        package init(service: String, port: ProtoUInt32, timeout: ConfigDuration? = nil, failOpen: Bool? = nil, statusOnError: String? = nil,
                     includeRequestBodyInCheck: RequestBody? = nil) {
            self.service = service; self.port = port; self.timeout = timeout; self.failOpen = failOpen; self.statusOnError = statusOnError
            self.includeRequestBodyInCheck = includeRequestBodyInCheck
        }
    }

    /// `includeRequestBodyInCheck` (Envoy's `with_request_body`): the body is buffered before the
    /// check, up to `maxRequestBytes`.
    package struct RequestBody: Codable, Sendable, Equatable {
        package var maxRequestBytes: ProtoUInt32?
        package var allowPartialMessage: Bool?
        package var packAsBytes: Bool?

        package init(maxRequestBytes: Int? = nil, allowPartialMessage: Bool? = nil, packAsBytes: Bool? = nil) {
            self.maxRequestBytes = maxRequestBytes.map(ProtoUInt32.init); self.allowPartialMessage = allowPartialMessage; self.packAsBytes = packAsBytes
        }
    }
}

/// A `uint32` as protobuf's JSON mapping reads it: a number or a decimal string (`port: "8000"`
/// in Istio's own ext-authz task).
package struct ProtoUInt32: Codable, Sendable, Equatable {
    package var value: Int

    package init(_ value: Int) { self.value = value }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int.self) {
            value = number
        } else if let text = try? container.decode(String.self), let number = Int(text) {
            value = number
        } else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a number"))
        }
        guard (0...Int(UInt32.max)).contains(value) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(value) is not a uint32"))
        }
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

extension IstioPolicyLoader {
    /// MeshConfig fields (mesh/v1alpha1/config.proto) EastWest does not read: a warning each.
    static let meshConfigFields: Set<String> = [
        "proxyListenPort", "proxyInboundListenPort", "proxyHttpPort", "connectTimeout", "protocolDetectionTimeout", "tcpKeepalive",
        "ingressClass", "ingressService", "ingressControllerMode", "ingressSelector", "enableTracing", "accessLogFile", "accessLogFormat",
        "accessLogEncoding", "enableEnvoyAccessLogService", "disableEnvoyListenerLog", "defaultConfig", "outboundTrafficPolicy",
        "inboundTrafficPolicy", "configSources", "enableAutoMtls", "trustDomain", "trustDomainAliases", "caCertificates",
        "defaultServiceExportTo", "defaultVirtualServiceExportTo", "defaultDestinationRuleExportTo", "rootNamespace", "localityLbSetting",
        "dnsRefreshRate", "h2UpgradePolicy", "inboundClusterStatName", "outboundClusterStatName", "certificates", "serviceSettings",
        "enablePrometheusMerge", "verifyCertificateAtClient", "ca", "defaultProviders", "discoverySelectors", "pathNormalization",
        "defaultHttpRetryPolicy", "meshMTLS", "tlsDefaults", "gatewayTopology", "serviceScopeConfigs", "thriftConfig",
        // Extension provider kinds other than ext-authz (telemetry backends).
        "zipkin", "lightstep", "datadog", "stackdriver", "opencensus", "skywalking", "opentelemetry", "prometheus",
        "envoyFileAccessLog", "envoyHttpAls", "envoyTcpAls", "envoyOtelAls", "sds",
        // ext-authz fields EastWest does not carry out.
        "clearRouteCache",
    ]

    /// `install.istio.io` IstioOperator: its `meshConfig`; the rest installs Istio.
    static let istioOperatorAPIVersions: Set<String> = ["install.istio.io/v1alpha1"]

    /// `kind: ConfigMap` (apiVersion v1): only Istio's own, `istio` (or `istio-<revision>`),
    /// holds the mesh config, as YAML text under `data.mesh`; other ConfigMaps are skipped.
    static func isMeshConfigMap(name: String) -> Bool { name == "istio" || name.hasPrefix("istio-") }

    static func readMeshConfigMap(_ data: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        let at = FieldPath().key("data").key("mesh")
        guard let mesh = data.mapping?["mesh"] else {
            loaded.warnings.append(map.error(.missingField, at: FieldPath().key("data"), "the istio ConfigMap has no 'mesh' key: no mesh config read").asWarning)
            return []
        }
        guard let text = mesh.string else { return [map.error(.invalidValue, at: at, "'mesh' must be the mesh config as YAML text")] }
        let inner: Node?
        do {
            inner = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            return [map.error(.malformedYAML, at: at, "invalid YAML in the mesh config: \(error)")]
        } catch {
            return [map.error(.malformedYAML, at: at, "invalid YAML in the mesh config: \(error)")]
        }
        guard let inner else { return [] }
        // Positions in the embedded text, as lines of the file: a block scalar (`mesh: |`) starts
        // on the line after its key, indented (by two more than the key, as written by hand and
        // by kubectl); a quoted one on the key's line.
        let key = map.mark(of: at)
        let block = mesh.scalar?.style == .literal || mesh.scalar?.style == .folded
        let innerMap = SourceMap(file: map.file, root: inner, lineOffset: (key?.line ?? 1) - (block ? 0 : 1),
                                 columnOffset: block ? (key?.column ?? 1) + 1 : 0)
        return readMeshConfig(inner, innerMap, at: [], &loaded)
    }

    static func readIstioOperator(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        let others = (spec.mapping.map { Array($0.keys) } ?? []).compactMap(\.string).filter { $0 != "meshConfig" }
        if !others.isEmpty {
            loaded.warnings.append(map.error(.notImplemented, at: FieldPath().key("spec"),
                "IstioOperator: only meshConfig is read; \(others.joined(separator: ", ")) (installation settings) ignored").asWarning)
        }
        guard let mesh = spec.mapping?["meshConfig"] else { return [] }
        return readMeshConfig(mesh, map, at: FieldPath().key("spec").key("meshConfig"), &loaded)
    }

    /// A mesh config document: decoded, its unread fields warned about, its providers checked
    /// as istiod's `buildExtAuthzHTTP` does.
    static func readMeshConfig(_ node: Node, _ map: SourceMap, at prefix: FieldPath, _ loaded: inout Loaded) -> [ConfigError] {
        switch ConfigLoader.decode(MeshConfig.self, node: node, map: map, at: prefix) {
        case .failure(let error):
            return [error]
        case .success(let (mesh, unknownKeys)):
            var errors = classify(unknownKeys, notImplemented: meshConfigFields, kind: "MeshConfig", map: map, loaded: &loaded)
            let providers = prefix.key("extensionProviders")
            var names = Set(loaded.extensionProviders.map(\.name))
            for (i, provider) in (mesh.extensionProviders ?? []).enumerated() {
                let at = providers.index(i)
                if provider.name.isEmpty { errors.append(map.error(.invalidValue, at: at.key("name"), "extension provider name must not be empty")) }
                if !names.insert(provider.name).inserted {
                    errors.append(map.error(.invalidValue, at: at.key("name"), "extension provider name must be unique, found duplicate: \(provider.name)"))
                }
                if let http = provider.envoyExtAuthzHttp {
                    errors += check(http, at: at.key("envoyExtAuthzHttp"), map: map)
                    errors += checkBody(http.includeRequestBodyInCheck, at: at.key("envoyExtAuthzHttp"), map: map)
                } else if let grpc = provider.envoyExtAuthzGrpc {
                    errors += checkService(grpc.service, port: grpc.port.value, statusOnError: grpc.statusOnError, at: at.key("envoyExtAuthzGrpc"), map: map)
                    errors += checkBody(grpc.includeRequestBodyInCheck, at: at.key("envoyExtAuthzGrpc"), map: map)
                }
                loaded.extensionProviders.append(provider)
            }
            return errors
        }
    }

    /// Envoy's `BufferSettings.max_request_bytes` must be above 0: istiod passes it on as written.
    private static func checkBody(_ body: MeshConfig.RequestBody?, at: FieldPath, map: SourceMap) -> [ConfigError] {
        guard let body, (body.maxRequestBytes?.value ?? 0) == 0 else { return [] }
        return [map.error(.invalidValue, at: at.key("includeRequestBodyInCheck"),
                          "includeRequestBodyInCheck.maxRequestBytes must be above 0 (Envoy rejects the filter without it, so Istio's push fails)")]
    }

    private static func check(_ http: MeshConfig.ExtAuthzHTTP, at: FieldPath, map: SourceMap) -> [ConfigError] {
        var errors = checkService(http.service, port: http.port.value, statusOnError: http.statusOnError, at: at, map: map)
        if let prefix = http.pathPrefix, !prefix.isEmpty, !prefix.hasPrefix("/") {
            errors.append(map.error(.invalidValue, at: at.key("pathPrefix"), "pathPrefix must begin with `/`, found: \"\(prefix)\""))
        }
        let lists: [(String, [String]?)] = [
            ("includeRequestHeadersInCheck", http.includeRequestHeadersInCheck), ("includeHeadersInCheck", http.includeHeadersInCheck),
            ("headersToDownstreamOnDeny", http.headersToDownstreamOnDeny), ("headersToDownstreamOnAllow", http.headersToDownstreamOnAllow),
            ("headersToUpstreamOnAllow", http.headersToUpstreamOnAllow),
        ]
        for (field, values) in lists where (values ?? []).contains("*") {
            errors.append(map.error(.invalidValue, at: at.key(field),
                "a single wildcard (\"*\") is not supported, change it to either prefix or suffix match: \(field)"))
        }
        return errors
    }

    private static func checkService(_ service: String, port: Int, statusOnError: String?, at: FieldPath, map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        if service.isEmpty { errors.append(map.error(.invalidValue, at: at.key("service"), "service must not be empty")) }
        if !(1...65535).contains(port) { errors.append(map.error(.invalidValue, at: at.key("port"), "port must be in the range [1, 65535], found: \(port)")) }
        if let status = statusOnError, ExternalAuthorizer.statusCode(status) == nil {
            errors.append(map.error(.invalidValue, at: at.key("statusOnError"), "unsupported statusOnError \(status): an HTTP status code 100-599"))
        }
        return errors
    }
}
