import Foundation
import Hummingbird
import HummingbirdTesting
import MemWALCore
import MemWALServer
import Testing

@Suite struct OpenAPITests {
  static var specification: String {
    get throws {
      let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
      return try String(contentsOf: root.appendingPathComponent("docs/openapi.yaml"), encoding: .utf8)
    }
  }

  /// The methods documented under each path of docs/openapi.yaml.
  static func documentedRoutes(_ text: String) -> Set<String> {
    var routes = Set<String>()
    var currentPath: String?
    var inPaths = false
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
      if line.hasPrefix("paths:") {
        inPaths = true
        continue
      }
      if inPaths, !line.isEmpty, !line.hasPrefix(" ") { inPaths = false }
      guard inPaths else { continue }
      if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
        currentPath = String(line.dropFirst(2).dropLast())
      } else if let path = currentPath, line.hasPrefix("    "), !line.hasPrefix("     ") {
        let method = line.trimmingCharacters(in: .whitespaces).dropLast()
        if ["get", "post", "put", "delete", "patch"].contains(method) {
          routes.insert("\(method.uppercased()) \(path)")
        }
      }
    }
    return routes
  }

  @Test func everyRouteIsDocumented() throws {
    let documented = Self.documentedRoutes(try Self.specification)
    for route in API.routes {
      #expect(documented.contains(route), "\(route) is missing from docs/openapi.yaml")
    }
    for route in documented {
      #expect(API.routes.contains(route), "docs/openapi.yaml documents \(route), which the server lacks")
    }
  }

  /// Every route in `API.routes` is answered by the API itself (JSON), not by the router's
  /// "no such route" 404.
  @Test func everyListedRouteIsRegistered() async throws {
    try await APITests.withServer { api, _ in
      for route in API.routes where route != "GET /v1/changes" && route != "GET /metrics" {
        let parts = route.split(separator: " ", maxSplits: 1)
        let method = HTTPRequest.Method(rawValue: String(parts[0]))!
        let path = String(parts[1]).replacingOccurrences(of: "{ns}", with: "none").replacingOccurrences(
          of: "{id}", with: "x"
        )
        .replacingOccurrences(of: "{kind}", with: "memories")
        let body: String? = method == .post ? "{}" : nil
        let (_, response) = try await api.call(method, path, body)
        guard case .object = response else {
          Issue.record("\(route) is not answered by the API")
          continue
        }
      }
    }
  }
}
