import Foundation
import MemWALServer
import Testing
import X509

/// `memwal certs init`'s library: what it makes, that it keeps what exists, and its errors.
@Suite struct ClusterCertificatesTests {
  func certificate(_ path: String) throws -> Certificate {
    try Certificate(pemEncoded: try String(contentsOfFile: path, encoding: .utf8))
  }

  func mode(_ path: String) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
  }

  @Test func makesACAAndACertificatePerMember() async throws {
    let directory = try TemporaryDirectory("init")
    defer { directory.remove() }
    let out = directory.path + "/nested/certs"
    let report = try ClusterCertificates.initialize(
      directory: out, names: ["n1", "n2", "controller"], validityDays: 30)
    #expect(!report.reusedAuthority && report.kept.isEmpty)
    #expect(
      Set(report.written)
        == [
          "ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem", "n2.pem", "n2-key.pem", "controller.pem",
          "controller-key.pem",
        ])
    for key in ["ca-key.pem", "n1-key.pem", "n2-key.pem", "controller-key.pem"] {
      #expect(try mode(out + "/" + key) == 0o600, "\(key)")
    }
    let authority = try certificate(out + "/ca.pem")
    guard case .isCertificateAuthority = try authority.extensions.basicConstraints else {
      Issue.record("ca.pem is not a CA")
      return
    }
    #expect(authority.issuer == authority.subject)
    let n1 = try certificate(out + "/n1.pem")
    #expect(n1.issuer == authority.subject)
    #expect(try n1.extensions.basicConstraints == .notCertificateAuthority)
    let usages = try #require(try n1.extensions.extendedKeyUsage)
    #expect(usages.contains(.serverAuth) && usages.contains(.clientAuth))
    let names = try #require(try n1.extensions.subjectAlternativeNames)
    #expect(names.contains(.dnsName("n1")) && names.contains(.dnsName("localhost")))
    #expect(!names.contains(.dnsName("n2")))
    let days = n1.notValidAfter.timeIntervalSince(Date()) / 86_400
    #expect(days > 29.9 && days < 30.01, "\(days)")
    var verifier = Verifier(rootCertificates: CertificateStore([authority])) { RFC5280Policy() }
    guard case .validCertificate = await verifier.validate(leaf: n1, intermediates: CertificateStore()) else {
      Issue.record("n1.pem does not verify against ca.pem")
      return
    }
  }

  @Test func anExistingCAIssuesTheMissingNamesAndNothingIsOverwritten() async throws {
    let directory = try TemporaryDirectory("reuse")
    defer { directory.remove() }
    let out = directory.path
    _ = try ClusterCertificates.initialize(directory: out, names: ["n1"])
    let before = try ["ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem"].map {
      try String(contentsOfFile: out + "/" + $0, encoding: .utf8)
    }
    let report = try ClusterCertificates.initialize(directory: out, names: ["n1", "n2"])
    #expect(report.reusedAuthority)
    #expect(report.written == ["n2-key.pem", "n2.pem"])
    #expect(Set(report.kept) == ["ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem"])
    let after = try ["ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem"].map {
      try String(contentsOfFile: out + "/" + $0, encoding: .utf8)
    }
    #expect(before == after)
    let authority = try certificate(out + "/ca.pem")
    var verifier = Verifier(rootCertificates: CertificateStore([authority])) { RFC5280Policy() }
    guard
      case .validCertificate = await verifier.validate(
        leaf: try certificate(out + "/n2.pem"), intermediates: CertificateStore())
    else {
      Issue.record("n2.pem, issued later, does not verify against the existing ca.pem")
      return
    }
    let again = try ClusterCertificates.initialize(directory: out, names: ["n1", "n2"])
    #expect(again.written.isEmpty)
    let replaced = try ClusterCertificates.initialize(directory: out, names: ["n1"], replacingExisting: true)
    #expect(!replaced.reusedAuthority && replaced.written.contains("ca.pem"))
    #expect(try String(contentsOfFile: out + "/ca.pem", encoding: .utf8) != before[0])
  }

  @Test func errorsSayWhatIsWrong() throws {
    let directory = try TemporaryDirectory("errors")
    defer { directory.remove() }
    let cases: [([String], String)] = [
      (["N1"], "lowercase"), (["n_1"], "lowercase"), ([""], "1 to 63"), (["1n"], "start with a letter"),
      (["n1-"], "not end with"), (["localhost"], "reserved"), (["n1", "n1"], "given twice"),
      ([], "at least one"),
      ([String(repeating: "a", count: 64)], "1 to 63"),
    ]
    for (names, text) in cases {
      #expect(throws: ClusterCertificateError.self, "\(names)") {
        try ClusterCertificates.initialize(directory: directory.path + "/x", names: names)
      }
      do {
        _ = try ClusterCertificates.initialize(directory: directory.path + "/x", names: names)
      } catch {
        #expect(error.description.contains(text), "\(names): \(error)")
      }
    }
    // A directory below a regular file cannot be made, even by root.
    _ = FileManager.default.createFile(atPath: directory.path + "/file", contents: Data("x".utf8))
    do {
      _ = try ClusterCertificates.initialize(directory: directory.path + "/file/certs", names: ["n1"])
      Issue.record("a directory below a file was accepted")
    } catch {
      guard case .directoryNotUsable(let path, _) = error else {
        Issue.record("\(error)")
        return
      }
      #expect(path == directory.path + "/file/certs" && error.description.contains("cannot use directory"))
    }
    // A certificate without its key is not silently reissued.
    _ = try ClusterCertificates.initialize(directory: directory.path + "/half", names: ["n1"])
    try FileManager.default.removeItem(atPath: directory.path + "/half/n1-key.pem")
    do {
      _ = try ClusterCertificates.initialize(directory: directory.path + "/half", names: ["n1"])
      Issue.record("a certificate without its key was accepted")
    } catch {
      #expect(error.description.contains("n1-key.pem") && error.description.contains("--force"), "\(error)")
    }
    #expect(throws: ClusterCertificateError.invalidValidity(days: 0, maximum: 3_650)) {
      try ClusterCertificates.initialize(directory: directory.path + "/days", names: ["n1"], validityDays: 0)
    }
  }
}
