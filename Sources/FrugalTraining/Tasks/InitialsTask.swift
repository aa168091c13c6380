// InitialsTask: the small task `frugal train` teaches by default — write a person's initials.
import Foundation
import FrugalFormats
import FrugalModels

/// A generated task a small model visibly learns: "Write the initials of: Ada King Lovelace" →
/// "A.K.L.". The rule generalizes, so accuracy is measured on names never seen in training.
///
/// Train and test names are drawn from disjoint first-name pools, so no test person's first
/// name was ever trained on.
public struct InitialsTask: Sendable {
    /// A question with its one right answer.
    public struct Item: Sendable, Equatable {
        public var prompt: String
        public var answer: String
    }

    public let train: [Item]
    public let test: [Item]

    static let firstNames = [
        "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Margaret", "Dennis", "Radia",
        "Ken", "Hedy", "Claude", "Katherine", "Tim", "Sophie", "Linus", "Anita", "Niklaus", "Shafi", "Tony",
        "Marie", "Albert", "Rosalind", "Charles", "Emmy", "Isaac", "Lise", "Niels", "Chien", "Richard",
        "Dorothy", "Werner", "Maria", "Paul", "Vera", "Carl", "Jocelyn", "Enrico", "Rachel", "Louis",
        "Mary", "Gregor", "Ruth", "Oliver", "Helen", "Victor", "Irene", "Felix", "Nora", "Hugo", "Clara",
        "Ivan", "Lena", "Oscar", "Petra", "Simon", "Tara", "Ulrich", "Wendy", "Xavier", "Yara", "Zoe",
    ]
    static let middleNames = [
        "Lee", "Marie", "James", "Ann", "Rose", "Jean", "Paul", "Beth", "Louise", "Ray", "Kay", "Dean", "Faye",
        "Quinn", "Elliot", "Hope", "Noel", "Wren", "Gale", "Blake",
    ]
    static let lastNames = [
        "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "McCarthy", "Hamilton", "Ritchie",
        "Perlman", "Thompson", "Lamarr", "Shannon", "Johnson", "Berners", "Wilson", "Torvalds", "Borg", "Wirth",
        "Goldwasser", "Hoare", "Curie", "Einstein", "Franklin", "Babbage", "Noether", "Newton", "Meitner", "Bohr",
        "Wu", "Feynman", "Hodgkin", "Heisenberg", "Mayer", "Dirac", "Rubin", "Sagan", "Bell", "Fermi", "Carson",
        "Pasteur", "Anning", "Mendel", "Benedict", "Sacks", "Keller", "Frankl", "Joliot", "Bloch",
    ]

    /// The prompt for a name.
    public static func prompt(for name: String) -> String { "Write the initials of: \(name)" }

    /// The initials of a name: "Ada King Lovelace" → "A.K.L.".
    public static func initials(of name: String) -> String {
        name.split(separator: " ").compactMap(\.first).map { "\($0)." }.joined()
    }

    /// Generates `trainCount` training and `testCount` test items from `seed`.
    public init(trainCount: Int = 400, testCount: Int = 50, seed: UInt64 = 7) {
        var random = SplitMix64(seed: seed)
        func below(_ n: Int) -> Int { Int(random.next() % UInt64(n)) }
        let split = Self.firstNames.count * 3 / 4
        func names(_ firsts: ArraySlice<String>, _ count: Int) -> [Item] {
            var seen = Set<String>(), items = [Item]()
            while items.count < count {
                var parts = [firsts[firsts.startIndex + below(firsts.count)]]
                if below(2) == 1 { parts.append(Self.middleNames[below(Self.middleNames.count)]) }
                parts.append(Self.lastNames[below(Self.lastNames.count)])
                let name = parts.joined(separator: " ")
                guard seen.insert(name).inserted else { continue }
                items.append(Item(prompt: Self.prompt(for: name), answer: Self.initials(of: name)))
            }
            return items
        }
        train = names(Self.firstNames[..<split], trainCount)
        test = names(Self.firstNames[split...], testCount)
    }

    /// Training examples: a user turn with the prompt and an assistant turn with the answer.
    public var trainingExamples: [TrainingExample] {
        train.map { TrainingExample(messages: [ChatMessage(role: "user", content: $0.prompt),
                                               ChatMessage(role: "assistant", content: $0.answer)]) }
    }

    /// Whether a model's reply counts as the right answer (surrounding space ignored).
    public static func isCorrect(_ reply: String, _ item: Item) -> Bool {
        reply.trimmingCharacters(in: .whitespacesAndNewlines) == item.answer
    }
}
