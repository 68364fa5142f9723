//! A counterfactual long-document retrieval benchmark (the kind of evaluation of Klett &
//! Ahle, 2024): facts the model knows, changed in a long document, and questions whose
//! right answer is the document's, not the model's prior.
//!
//! * [`candidates`]: facts of nine relations (capitals, landmarks' cities, cities'
//!   countries, official languages, currencies, authors, painters, composers, inventors),
//!   each with the value the model is expected to know. Only those the model answers
//!   correctly with no document are used ([`check_prior`]).
//! * [`make_documents`]: seeded documents of a target length in tokens: varied filler
//!   sentences from a small grammar ([`filler_sentence`], no names or places), in
//!   paragraphs, with several facts, each changed to another value of the same kind
//!   ("The Eiffel Tower stands in Lima."), at random places. The facts of one document
//!   share no entity (subject, true value or document value), so one fact's document
//!   value is never another question's true answer.
//! * Scoring ([`Fact::is_correct`], [`Fact::gives_prior`]): an answer is right if it
//!   contains the document's value (case-insensitive, as whole words, or one of its
//!   aliases); it also records whether it gave the prior (true) value.
//! * Answering: [`ask`] (a fresh prompt, optionally reading a memory bank) and
//!   [`SharedPrefix`] (a long document prefilled once, its KV cache cloned per question).
//!
//! The benchmark program is `examples/counterfactual.rs`; the RAG baseline is
//! [`crate::rag`].

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{EmtError, Result};
use crate::generate::logits_vec;
use crate::model::{KvCache, Llama, Memory};
use crate::rag::{answer_eos, chat_prompt, SYSTEM_PLAIN};
use crate::tokenizer::Tokenizer;

/// The relation a fact states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The capital of a country.
    Capital,
    /// The city a landmark stands in.
    LandmarkCity,
    /// The country a city is in.
    CityCountry,
    /// The official language of a country.
    Language,
    /// The currency of a country.
    Currency,
    /// The author of a book.
    Author,
    /// The painter of a painting.
    Painter,
    /// The composer of a work.
    Composer,
    /// The inventor of an invention.
    Inventor,
}

/// The kind of a relation's values (documents change a value to another of its kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    City,
    Country,
    Language,
    Currency,
    Writer,
    Painter,
    Composer,
    Inventor,
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Relation {
    /// Every relation.
    pub const ALL: [Relation; 9] = [
        Relation::Capital,
        Relation::LandmarkCity,
        Relation::CityCountry,
        Relation::Language,
        Relation::Currency,
        Relation::Author,
        Relation::Painter,
        Relation::Composer,
        Relation::Inventor,
    ];

    fn kind(self) -> Kind {
        match self {
            Relation::Capital | Relation::LandmarkCity => Kind::City,
            Relation::CityCountry => Kind::Country,
            Relation::Language => Kind::Language,
            Relation::Currency => Kind::Currency,
            Relation::Author => Kind::Writer,
            Relation::Painter => Kind::Painter,
            Relation::Composer => Kind::Composer,
            Relation::Inventor => Kind::Inventor,
        }
    }

    /// The sentence stating `value` for `subject` ("The Eiffel Tower stands in Paris.").
    pub fn statement(self, subject: &str, value: &str) -> String {
        let s = match self {
            Relation::Capital => format!("the capital of {subject} is {value}."),
            Relation::LandmarkCity => format!("{subject} stands in {value}."),
            Relation::CityCountry => format!("{subject} is a city in {value}."),
            Relation::Language => format!("the official language of {subject} is {value}."),
            Relation::Currency => format!("the currency of {subject} is the {value}."),
            Relation::Author => format!("{subject} was written by {value}."),
            Relation::Painter => format!("{subject} was painted by {value}."),
            Relation::Composer => format!("{subject} was composed by {value}."),
            Relation::Inventor => format!("{subject} was invented by {value}."),
        };
        upper_first(&s)
    }

    /// The question about `subject` ("In which city is the Eiffel Tower?").
    pub fn question(self, subject: &str) -> String {
        match self {
            Relation::Capital => format!("What is the capital of {subject}?"),
            Relation::LandmarkCity => format!("In which city is {subject}?"),
            Relation::CityCountry => format!("In which country is the city of {subject}?"),
            Relation::Language => format!("What is the official language of {subject}?"),
            Relation::Currency => format!("What is the currency of {subject}?"),
            Relation::Author => format!("Who wrote {subject}?"),
            Relation::Painter => format!("Who painted {subject}?"),
            Relation::Composer => format!("Who composed {subject}?"),
            Relation::Inventor => format!("Who invented {subject}?"),
        }
    }
}

/// Values of each kind: `(as written, aliases an answer may use)`; no alias means the
/// written form.
type Values = &'static [(&'static str, &'static [&'static str])];

const CITIES: Values = &[
    ("Paris", &[]),
    ("Rome", &[]),
    ("London", &[]),
    ("Berlin", &[]),
    ("Madrid", &[]),
    ("Tokyo", &[]),
    ("Moscow", &[]),
    ("Beijing", &["Beijing", "Peking"]),
    ("Cairo", &[]),
    ("Athens", &[]),
    ("Lisbon", &[]),
    ("Vienna", &[]),
    ("Dublin", &[]),
    ("Oslo", &[]),
    ("Stockholm", &[]),
    ("Helsinki", &[]),
    ("Warsaw", &[]),
    ("Budapest", &[]),
    ("Nairobi", &[]),
    ("Lima", &[]),
    ("Ottawa", &[]),
    ("Canberra", &[]),
    ("Seoul", &[]),
    ("Bangkok", &[]),
    ("Buenos Aires", &[]),
    ("New Delhi", &["Delhi"]),
    ("Ankara", &[]),
    ("Amsterdam", &[]),
    ("Brussels", &[]),
    ("Copenhagen", &[]),
    ("Prague", &[]),
    ("Havana", &[]),
    ("Santiago", &[]),
    ("Jakarta", &[]),
    ("Manila", &[]),
    ("Hanoi", &[]),
    ("Tehran", &[]),
    ("Baghdad", &[]),
    ("Riyadh", &[]),
    ("Washington", &[]),
    ("Mexico City", &[]),
    ("Bern", &["Bern", "Berne"]),
    ("Edinburgh", &[]),
    ("Kyiv", &["Kyiv", "Kiev"]),
    ("Caracas", &[]),
    ("Abuja", &[]),
    ("Rabat", &[]),
    ("Addis Ababa", &[]),
    ("Islamabad", &[]),
    ("Kabul", &[]),
    ("Damascus", &[]),
    ("Beirut", &[]),
    ("Bucharest", &[]),
    ("Belgrade", &[]),
    ("Zagreb", &[]),
    ("Reykjavik", &[]),
    ("Kathmandu", &[]),
    ("Kuala Lumpur", &[]),
    ("Wellington", &[]),
    ("New York", &[]),
    ("Sydney", &[]),
    ("Toronto", &[]),
    ("Chicago", &[]),
    ("Barcelona", &[]),
    ("Istanbul", &[]),
    ("Dubai", &[]),
    ("Seattle", &[]),
    ("San Francisco", &[]),
    ("Los Angeles", &[]),
    ("Mumbai", &[]),
    ("Shanghai", &[]),
    ("Venice", &[]),
    ("Florence", &[]),
    ("Munich", &[]),
    ("Montreal", &[]),
    ("Melbourne", &[]),
    ("Kyoto", &[]),
    ("Zurich", &[]),
    ("Geneva", &[]),
    ("Rio de Janeiro", &[]),
    ("Agra", &[]),
    ("Granada", &[]),
    ("Milan", &[]),
    ("Naples", &[]),
    ("Hamburg", &[]),
    ("Boston", &[]),
    ("Vancouver", &[]),
    ("Osaka", &[]),
    ("Marseille", &[]),
    ("Seville", &[]),
    ("Krakow", &[]),
    ("Hong Kong", &[]),
    ("Cape Town", &[]),
];

const COUNTRIES: Values = &[
    ("France", &[]),
    ("Germany", &[]),
    ("Italy", &[]),
    ("Spain", &[]),
    ("Japan", &[]),
    ("Russia", &[]),
    ("China", &[]),
    ("Egypt", &[]),
    ("Greece", &[]),
    ("Portugal", &[]),
    ("Austria", &[]),
    ("Ireland", &[]),
    ("Norway", &[]),
    ("Sweden", &[]),
    ("Finland", &[]),
    ("Poland", &[]),
    ("Hungary", &[]),
    ("Kenya", &[]),
    ("Peru", &[]),
    ("Canada", &[]),
    ("Australia", &[]),
    ("South Korea", &["Korea"]),
    ("Thailand", &[]),
    ("Argentina", &[]),
    ("Mexico", &[]),
    ("India", &[]),
    ("Turkey", &[]),
    ("the Netherlands", &["Netherlands", "Holland"]),
    ("Belgium", &[]),
    ("Denmark", &[]),
    ("Brazil", &[]),
    ("Chile", &[]),
    ("Switzerland", &[]),
    ("Iran", &[]),
    ("Vietnam", &[]),
    ("Indonesia", &[]),
    ("Nigeria", &[]),
    ("Morocco", &[]),
    ("Cuba", &[]),
    ("South Africa", &[]),
    (
        "the United States",
        &["United States", "USA", "U.S.", "America"],
    ),
    (
        "the United Kingdom",
        &["United Kingdom", "UK", "Britain", "England"],
    ),
];

const LANGUAGES: Values = &[
    ("French", &[]),
    ("German", &[]),
    ("Italian", &[]),
    ("Spanish", &[]),
    ("Portuguese", &[]),
    ("Japanese", &[]),
    ("Chinese", &["Chinese", "Mandarin"]),
    ("Russian", &[]),
    ("Dutch", &[]),
    ("Greek", &[]),
    ("Polish", &[]),
    ("Swedish", &[]),
    ("Turkish", &[]),
    ("Arabic", &[]),
    ("Korean", &[]),
    ("Finnish", &[]),
    ("Hungarian", &[]),
    ("Norwegian", &[]),
    ("Danish", &[]),
    ("Thai", &[]),
    ("Vietnamese", &[]),
    ("Hindi", &[]),
    ("Persian", &["Persian", "Farsi"]),
    ("Hebrew", &[]),
    ("English", &[]),
    ("Swahili", &[]),
    ("Ukrainian", &[]),
    ("Czech", &[]),
];

const CURRENCIES: Values = &[
    ("yen", &[]),
    ("pound", &["pound", "sterling"]),
    ("dollar", &[]),
    ("rupee", &[]),
    ("ruble", &["ruble", "rouble"]),
    ("yuan", &["yuan", "renminbi"]),
    ("peso", &[]),
    ("franc", &[]),
    ("won", &[]),
    ("zloty", &[]),
    ("krona", &[]),
    ("baht", &[]),
    ("lira", &[]),
    ("shekel", &[]),
    ("rand", &[]),
    ("euro", &[]),
    ("krone", &[]),
];

const WRITERS: Values = &[
    ("William Shakespeare", &["Shakespeare"]),
    ("Charles Dickens", &["Dickens"]),
    ("Jane Austen", &["Austen"]),
    ("Leo Tolstoy", &["Tolstoy"]),
    ("Mark Twain", &["Twain"]),
    ("George Orwell", &["Orwell"]),
    ("Homer", &[]),
    ("J. K. Rowling", &["Rowling"]),
    ("Herman Melville", &["Melville"]),
    ("Miguel de Cervantes", &["Cervantes"]),
    ("J. R. R. Tolkien", &["Tolkien"]),
    ("Mary Shelley", &["Shelley"]),
    ("Ernest Hemingway", &["Hemingway"]),
    ("F. Scott Fitzgerald", &["Fitzgerald"]),
    ("Victor Hugo", &["Victor Hugo"]),
    ("Arthur Conan Doyle", &["Conan Doyle", "Doyle"]),
    ("Agatha Christie", &["Christie"]),
    ("Dante Alighieri", &["Dante"]),
    ("Johann Wolfgang von Goethe", &["Goethe"]),
    ("Harper Lee", &["Harper Lee"]),
    ("J. D. Salinger", &["Salinger"]),
    ("Fyodor Dostoevsky", &["Dostoevsky", "Dostoyevsky"]),
    ("Edgar Allan Poe", &["Poe"]),
    ("James Joyce", &["Joyce"]),
    ("Charlotte Bronte", &["Bronte", "Brontë"]),
    ("Lewis Carroll", &["Carroll"]),
    ("Oscar Wilde", &["Wilde"]),
    ("Bram Stoker", &["Stoker"]),
    ("Robert Louis Stevenson", &["Stevenson"]),
];

const PAINTERS: Values = &[
    ("Leonardo da Vinci", &["Leonardo", "da Vinci"]),
    ("Vincent van Gogh", &["van Gogh", "Gogh"]),
    ("Pablo Picasso", &["Picasso"]),
    ("Edvard Munch", &["Munch"]),
    ("Johannes Vermeer", &["Vermeer"]),
    ("Michelangelo", &[]),
    ("Sandro Botticelli", &["Botticelli"]),
    ("Claude Monet", &["Monet"]),
    ("Rembrandt", &[]),
    ("Salvador Dali", &["Dali", "Dalí"]),
    ("Frida Kahlo", &["Kahlo"]),
    ("Andy Warhol", &["Warhol"]),
    ("Raphael", &[]),
];

const COMPOSERS: Values = &[
    ("Ludwig van Beethoven", &["Beethoven"]),
    ("Wolfgang Amadeus Mozart", &["Mozart"]),
    ("Antonio Vivaldi", &["Vivaldi"]),
    ("Pyotr Tchaikovsky", &["Tchaikovsky"]),
    ("Johann Sebastian Bach", &["Bach"]),
    ("Frederic Chopin", &["Chopin"]),
    ("Richard Wagner", &["Wagner"]),
    ("Giuseppe Verdi", &["Verdi"]),
    ("Johann Strauss", &["Strauss"]),
    ("George Frideric Handel", &["Handel"]),
    ("Joseph Haydn", &["Haydn"]),
];

const INVENTORS: Values = &[
    ("Alexander Graham Bell", &["Graham Bell", "Bell"]),
    ("Thomas Edison", &["Edison"]),
    ("Johannes Gutenberg", &["Gutenberg"]),
    ("Alfred Nobel", &["Nobel"]),
    ("the Wright brothers", &["Wright"]),
    ("Guglielmo Marconi", &["Marconi"]),
    ("Tim Berners-Lee", &["Berners-Lee", "Berners Lee"]),
    ("James Watt", &["Watt"]),
    ("Nikola Tesla", &["Tesla"]),
    ("Isaac Newton", &["Newton"]),
    ("Albert Einstein", &["Einstein"]),
    ("Marie Curie", &["Curie"]),
    ("Galileo Galilei", &["Galileo"]),
    ("Benjamin Franklin", &["Franklin"]),
    ("Henry Ford", &["Ford"]),
];

fn values(kind: Kind) -> Values {
    match kind {
        Kind::City => CITIES,
        Kind::Country => COUNTRIES,
        Kind::Language => LANGUAGES,
        Kind::Currency => CURRENCIES,
        Kind::Writer => WRITERS,
        Kind::Painter => PAINTERS,
        Kind::Composer => COMPOSERS,
        Kind::Inventor => INVENTORS,
    }
}

/// The candidate facts: `(relation, subject, the true value)`; the value is one of its
/// kind's values.
const CANDIDATES: &[(Relation, &str, &str)] = {
    use Relation::*;
    &[
        (Capital, "France", "Paris"),
        (Capital, "Germany", "Berlin"),
        (Capital, "Italy", "Rome"),
        (Capital, "Spain", "Madrid"),
        (Capital, "Japan", "Tokyo"),
        (Capital, "Russia", "Moscow"),
        (Capital, "China", "Beijing"),
        (Capital, "Egypt", "Cairo"),
        (Capital, "the United Kingdom", "London"),
        (Capital, "Greece", "Athens"),
        (Capital, "Portugal", "Lisbon"),
        (Capital, "Austria", "Vienna"),
        (Capital, "Ireland", "Dublin"),
        (Capital, "Norway", "Oslo"),
        (Capital, "Sweden", "Stockholm"),
        (Capital, "Finland", "Helsinki"),
        (Capital, "Poland", "Warsaw"),
        (Capital, "Hungary", "Budapest"),
        (Capital, "Kenya", "Nairobi"),
        (Capital, "Peru", "Lima"),
        (Capital, "Canada", "Ottawa"),
        (Capital, "Australia", "Canberra"),
        (Capital, "South Korea", "Seoul"),
        (Capital, "Thailand", "Bangkok"),
        (Capital, "Argentina", "Buenos Aires"),
        (Capital, "India", "New Delhi"),
        (Capital, "Turkey", "Ankara"),
        (Capital, "the Netherlands", "Amsterdam"),
        (Capital, "Belgium", "Brussels"),
        (Capital, "Denmark", "Copenhagen"),
        (Capital, "the Czech Republic", "Prague"),
        (Capital, "Cuba", "Havana"),
        (Capital, "Chile", "Santiago"),
        (Capital, "Indonesia", "Jakarta"),
        (Capital, "the Philippines", "Manila"),
        (Capital, "Vietnam", "Hanoi"),
        (Capital, "Iran", "Tehran"),
        (Capital, "Iraq", "Baghdad"),
        (Capital, "Saudi Arabia", "Riyadh"),
        (Capital, "the United States", "Washington"),
        (Capital, "Switzerland", "Bern"),
        (Capital, "Scotland", "Edinburgh"),
        (Capital, "Ukraine", "Kyiv"),
        (Capital, "Venezuela", "Caracas"),
        (Capital, "Nigeria", "Abuja"),
        (Capital, "Morocco", "Rabat"),
        (Capital, "Ethiopia", "Addis Ababa"),
        (Capital, "Pakistan", "Islamabad"),
        (Capital, "Afghanistan", "Kabul"),
        (Capital, "Syria", "Damascus"),
        (Capital, "Lebanon", "Beirut"),
        (Capital, "Romania", "Bucharest"),
        (Capital, "Serbia", "Belgrade"),
        (Capital, "Croatia", "Zagreb"),
        (Capital, "Iceland", "Reykjavik"),
        (Capital, "Nepal", "Kathmandu"),
        (Capital, "Malaysia", "Kuala Lumpur"),
        (Capital, "New Zealand", "Wellington"),
        (LandmarkCity, "the Eiffel Tower", "Paris"),
        (LandmarkCity, "the Colosseum", "Rome"),
        (LandmarkCity, "Big Ben", "London"),
        (LandmarkCity, "the Statue of Liberty", "New York"),
        (LandmarkCity, "the Golden Gate Bridge", "San Francisco"),
        (LandmarkCity, "the Brandenburg Gate", "Berlin"),
        (LandmarkCity, "the Kremlin", "Moscow"),
        (LandmarkCity, "the Acropolis", "Athens"),
        (LandmarkCity, "the Sagrada Familia", "Barcelona"),
        (LandmarkCity, "the Louvre", "Paris"),
        (LandmarkCity, "Buckingham Palace", "London"),
        (LandmarkCity, "the Empire State Building", "New York"),
        (LandmarkCity, "the Forbidden City", "Beijing"),
        (LandmarkCity, "Christ the Redeemer", "Rio de Janeiro"),
        (LandmarkCity, "the Burj Khalifa", "Dubai"),
        (LandmarkCity, "the CN Tower", "Toronto"),
        (LandmarkCity, "the Space Needle", "Seattle"),
        (LandmarkCity, "the Taj Mahal", "Agra"),
        (LandmarkCity, "the Hagia Sophia", "Istanbul"),
        (LandmarkCity, "Red Square", "Moscow"),
        (LandmarkCity, "the Alhambra", "Granada"),
        (LandmarkCity, "the Parthenon", "Athens"),
        (LandmarkCity, "the Petronas Towers", "Kuala Lumpur"),
        (LandmarkCity, "the Brooklyn Bridge", "New York"),
        (LandmarkCity, "Times Square", "New York"),
        (LandmarkCity, "the Trevi Fountain", "Rome"),
        (LandmarkCity, "Westminster Abbey", "London"),
        (LandmarkCity, "Central Park", "New York"),
        (LandmarkCity, "the Charles Bridge", "Prague"),
        (LandmarkCity, "the Hollywood sign", "Los Angeles"),
        (LandmarkCity, "the White House", "Washington"),
        (LandmarkCity, "Notre-Dame Cathedral", "Paris"),
        (LandmarkCity, "the Blue Mosque", "Istanbul"),
        (LandmarkCity, "the Prado Museum", "Madrid"),
        (LandmarkCity, "the Rijksmuseum", "Amsterdam"),
        (LandmarkCity, "Tiananmen Square", "Beijing"),
        (CityCountry, "Paris", "France"),
        (CityCountry, "Berlin", "Germany"),
        (CityCountry, "Tokyo", "Japan"),
        (CityCountry, "Toronto", "Canada"),
        (CityCountry, "Sydney", "Australia"),
        (CityCountry, "Mumbai", "India"),
        (CityCountry, "Barcelona", "Spain"),
        (CityCountry, "Milan", "Italy"),
        (CityCountry, "Munich", "Germany"),
        (CityCountry, "Chicago", "the United States"),
        (CityCountry, "Rio de Janeiro", "Brazil"),
        (CityCountry, "Istanbul", "Turkey"),
        (CityCountry, "Cairo", "Egypt"),
        (CityCountry, "Amsterdam", "the Netherlands"),
        (CityCountry, "Vienna", "Austria"),
        (CityCountry, "Lisbon", "Portugal"),
        (CityCountry, "Stockholm", "Sweden"),
        (CityCountry, "Zurich", "Switzerland"),
        (CityCountry, "Shanghai", "China"),
        (CityCountry, "Seoul", "South Korea"),
        (CityCountry, "Moscow", "Russia"),
        (CityCountry, "Athens", "Greece"),
        (CityCountry, "Dublin", "Ireland"),
        (CityCountry, "Buenos Aires", "Argentina"),
        (CityCountry, "Bangkok", "Thailand"),
        (CityCountry, "Nairobi", "Kenya"),
        (CityCountry, "Montreal", "Canada"),
        (CityCountry, "Vancouver", "Canada"),
        (CityCountry, "Melbourne", "Australia"),
        (CityCountry, "Kyoto", "Japan"),
        (CityCountry, "Venice", "Italy"),
        (CityCountry, "Florence", "Italy"),
        (CityCountry, "Osaka", "Japan"),
        (CityCountry, "Marseille", "France"),
        (CityCountry, "Los Angeles", "the United States"),
        (CityCountry, "Krakow", "Poland"),
        (CityCountry, "Cape Town", "South Africa"),
        (CityCountry, "Havana", "Cuba"),
        (CityCountry, "Lima", "Peru"),
        (Language, "Brazil", "Portuguese"),
        (Language, "France", "French"),
        (Language, "Germany", "German"),
        (Language, "Spain", "Spanish"),
        (Language, "Italy", "Italian"),
        (Language, "Japan", "Japanese"),
        (Language, "China", "Chinese"),
        (Language, "Russia", "Russian"),
        (Language, "Mexico", "Spanish"),
        (Language, "the Netherlands", "Dutch"),
        (Language, "Greece", "Greek"),
        (Language, "Poland", "Polish"),
        (Language, "Sweden", "Swedish"),
        (Language, "Turkey", "Turkish"),
        (Language, "Egypt", "Arabic"),
        (Language, "Portugal", "Portuguese"),
        (Language, "South Korea", "Korean"),
        (Language, "Argentina", "Spanish"),
        (Language, "Austria", "German"),
        (Language, "Iran", "Persian"),
        (Language, "Israel", "Hebrew"),
        (Language, "Finland", "Finnish"),
        (Language, "Hungary", "Hungarian"),
        (Language, "Norway", "Norwegian"),
        (Language, "Denmark", "Danish"),
        (Language, "Thailand", "Thai"),
        (Language, "Vietnam", "Vietnamese"),
        (Language, "Saudi Arabia", "Arabic"),
        (Language, "Kenya", "Swahili"),
        (Language, "Australia", "English"),
        (Language, "the United States", "English"),
        (Language, "Peru", "Spanish"),
        (Language, "Chile", "Spanish"),
        (Language, "Ukraine", "Ukrainian"),
        (Currency, "Japan", "yen"),
        (Currency, "the United Kingdom", "pound"),
        (Currency, "the United States", "dollar"),
        (Currency, "India", "rupee"),
        (Currency, "Russia", "ruble"),
        (Currency, "China", "yuan"),
        (Currency, "Mexico", "peso"),
        (Currency, "Switzerland", "franc"),
        (Currency, "South Korea", "won"),
        (Currency, "Poland", "zloty"),
        (Currency, "Sweden", "krona"),
        (Currency, "Thailand", "baht"),
        (Currency, "Turkey", "lira"),
        (Currency, "Israel", "shekel"),
        (Currency, "South Africa", "rand"),
        (Currency, "Germany", "euro"),
        (Currency, "France", "euro"),
        (Currency, "Italy", "euro"),
        (Currency, "Spain", "euro"),
        (Currency, "Denmark", "krone"),
        (Currency, "Norway", "krone"),
        (Currency, "Canada", "dollar"),
        (Currency, "Australia", "dollar"),
        (Author, "Romeo and Juliet", "William Shakespeare"),
        (Author, "Hamlet", "William Shakespeare"),
        (Author, "Macbeth", "William Shakespeare"),
        (Author, "Pride and Prejudice", "Jane Austen"),
        (Author, "War and Peace", "Leo Tolstoy"),
        (Author, "Oliver Twist", "Charles Dickens"),
        (Author, "A Christmas Carol", "Charles Dickens"),
        (Author, "The Adventures of Tom Sawyer", "Mark Twain"),
        (Author, "Nineteen Eighty-Four", "George Orwell"),
        (Author, "Animal Farm", "George Orwell"),
        (Author, "the Odyssey", "Homer"),
        (Author, "the Iliad", "Homer"),
        (Author, "Don Quixote", "Miguel de Cervantes"),
        (Author, "The Hobbit", "J. R. R. Tolkien"),
        (Author, "The Lord of the Rings", "J. R. R. Tolkien"),
        (Author, "Frankenstein", "Mary Shelley"),
        (Author, "The Old Man and the Sea", "Ernest Hemingway"),
        (Author, "The Great Gatsby", "F. Scott Fitzgerald"),
        (Author, "Les Miserables", "Victor Hugo"),
        (Author, "Murder on the Orient Express", "Agatha Christie"),
        (Author, "The Divine Comedy", "Dante Alighieri"),
        (Author, "Faust", "Johann Wolfgang von Goethe"),
        (Author, "To Kill a Mockingbird", "Harper Lee"),
        (Author, "The Catcher in the Rye", "J. D. Salinger"),
        (Author, "Moby-Dick", "Herman Melville"),
        (
            Author,
            "Harry Potter and the Philosopher's Stone",
            "J. K. Rowling",
        ),
        (Author, "Crime and Punishment", "Fyodor Dostoevsky"),
        (Author, "The Raven", "Edgar Allan Poe"),
        (Author, "Ulysses", "James Joyce"),
        (Author, "Jane Eyre", "Charlotte Bronte"),
        (Author, "Alice's Adventures in Wonderland", "Lewis Carroll"),
        (Author, "The Picture of Dorian Gray", "Oscar Wilde"),
        (Author, "Dracula", "Bram Stoker"),
        (Author, "Treasure Island", "Robert Louis Stevenson"),
        (
            Author,
            "The Adventures of Sherlock Holmes",
            "Arthur Conan Doyle",
        ),
        (Painter, "the Mona Lisa", "Leonardo da Vinci"),
        (Painter, "The Last Supper", "Leonardo da Vinci"),
        (Painter, "The Starry Night", "Vincent van Gogh"),
        (Painter, "Sunflowers", "Vincent van Gogh"),
        (Painter, "Guernica", "Pablo Picasso"),
        (Painter, "The Scream", "Edvard Munch"),
        (Painter, "Girl with a Pearl Earring", "Johannes Vermeer"),
        (Painter, "the ceiling of the Sistine Chapel", "Michelangelo"),
        (Painter, "The Birth of Venus", "Sandro Botticelli"),
        (Painter, "Water Lilies", "Claude Monet"),
        (Painter, "The Night Watch", "Rembrandt"),
        (Painter, "The Persistence of Memory", "Salvador Dali"),
        (Painter, "The School of Athens", "Raphael"),
        (Composer, "the Moonlight Sonata", "Ludwig van Beethoven"),
        (Composer, "The Magic Flute", "Wolfgang Amadeus Mozart"),
        (
            Composer,
            "The Marriage of Figaro",
            "Wolfgang Amadeus Mozart",
        ),
        (Composer, "The Four Seasons", "Antonio Vivaldi"),
        (Composer, "Swan Lake", "Pyotr Tchaikovsky"),
        (Composer, "The Nutcracker", "Pyotr Tchaikovsky"),
        (
            Composer,
            "the Brandenburg Concertos",
            "Johann Sebastian Bach",
        ),
        (Composer, "The Ride of the Valkyries", "Richard Wagner"),
        (Composer, "the opera Aida", "Giuseppe Verdi"),
        (Composer, "The Blue Danube", "Johann Strauss"),
        (Composer, "the Messiah", "George Frideric Handel"),
        (Inventor, "the telephone", "Alexander Graham Bell"),
        (Inventor, "the light bulb", "Thomas Edison"),
        (Inventor, "the printing press", "Johannes Gutenberg"),
        (Inventor, "dynamite", "Alfred Nobel"),
        (Inventor, "the airplane", "the Wright brothers"),
        (Inventor, "the radio", "Guglielmo Marconi"),
        (Inventor, "the World Wide Web", "Tim Berners-Lee"),
        (Inventor, "the steam engine", "James Watt"),
    ]
};

fn keys_of(kind: Kind, value: &str) -> Option<Vec<String>> {
    values(kind)
        .iter()
        .find(|(v, _)| *v == value)
        .map(|(v, keys)| {
            if keys.is_empty() {
                vec![v.to_string()]
            } else {
                keys.iter().map(|k| k.to_string()).collect()
            }
        })
}

/// Whether `text` contains `key` case-insensitively as whole words (the characters
/// around the match are not letters or digits).
pub fn contains_key(text: &str, key: &str) -> bool {
    let t = text.to_lowercase();
    let k = key.to_lowercase();
    if k.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(i) = t[from..].find(&k) {
        let a = from + i;
        let b = a + k.len();
        let before = t[..a].chars().next_back();
        let after = t[b..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        if edge(before) && edge(after) {
            return true;
        }
        from = a + t[a..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// Two entity names clash if either contains the other as whole words.
fn clash(a: &str, b: &str) -> bool {
    contains_key(a, b) || contains_key(b, a)
}

/// A fact the model may know: a subject and its true value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub relation: Relation,
    pub subject: String,
    /// The true value (what the model should answer with no document).
    pub prior: String,
    /// Forms of the true value an answer may use.
    pub prior_keys: Vec<String>,
}

impl Candidate {
    /// The question about it.
    pub fn question(&self) -> String {
        self.relation.question(&self.subject)
    }

    /// Whether an answer gives the true value.
    pub fn gives_prior(&self, answer: &str) -> bool {
        self.prior_keys.iter().any(|k| contains_key(answer, k))
    }

    /// The subject without a leading article, as an entity name.
    fn subject_key(&self) -> &str {
        self.subject
            .strip_prefix("the ")
            .or_else(|| self.subject.strip_prefix("The "))
            .unwrap_or(&self.subject)
    }
}

/// Every candidate fact.
pub fn candidates() -> Vec<Candidate> {
    CANDIDATES
        .iter()
        .map(|&(relation, subject, prior)| Candidate {
            relation,
            subject: subject.to_string(),
            prior: prior.to_string(),
            prior_keys: keys_of(relation.kind(), prior).unwrap_or_else(|| vec![prior.to_string()]),
        })
        .collect()
}

/// A fact changed in a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    pub relation: Relation,
    pub subject: String,
    /// The true value.
    pub prior: String,
    pub prior_keys: Vec<String>,
    /// The document's (counterfactual) value.
    pub value: String,
    pub value_keys: Vec<String>,
}

impl Fact {
    /// The document's sentence.
    pub fn statement(&self) -> String {
        self.relation.statement(&self.subject, &self.value)
    }

    /// The question.
    pub fn question(&self) -> String {
        self.relation.question(&self.subject)
    }

    /// Whether an answer gives the document's value.
    pub fn is_correct(&self, answer: &str) -> bool {
        self.value_keys.iter().any(|k| contains_key(answer, k))
    }

    /// Whether an answer gives the true (prior) value.
    pub fn gives_prior(&self, answer: &str) -> bool {
        self.prior_keys.iter().any(|k| contains_key(answer, k))
    }

    fn entities(&self) -> Vec<&str> {
        let subject = self
            .subject
            .strip_prefix("the ")
            .or_else(|| self.subject.strip_prefix("The "))
            .unwrap_or(&self.subject);
        let mut e = vec![subject];
        e.extend(self.prior_keys.iter().map(String::as_str));
        e.extend(self.value_keys.iter().map(String::as_str));
        e
    }
}

/// A fact placed in a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedFact {
    pub fact: Fact,
    /// Byte offset of its sentence in the document.
    pub byte_start: usize,
    /// `byte_start` over the document's length: 0 at the start, 1 at the end.
    pub depth: f64,
}

/// A generated document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub text: String,
    /// Its length in tokens (by the counter it was made with).
    pub n_tokens: usize,
    pub target_tokens: usize,
    pub facts: Vec<PlacedFact>,
}

// The filler grammar: past-tense sentences about ordinary people and things, with no
// names, places, languages, currencies or inventions.
const F_SUBJECTS: &[&str] = &[
    "The committee",
    "A neighbour",
    "The gardener",
    "Our team",
    "The old librarian",
    "A group of students",
    "The baker",
    "The night nurse",
    "The new manager",
    "A retired teacher",
    "The youngest child",
    "The museum guide",
    "A local farmer",
    "The tired driver",
    "The choir director",
    "Two engineers",
    "The ferry captain",
    "A quiet visitor",
    "The head cook",
    "The school principal",
    "My aunt",
    "The carpenter",
    "A young painter",
    "The postman",
];

const F_ACTIONS: &[&str] = &[
    "repaired the broken fence",
    "painted the kitchen walls",
    "planted a row of tulips",
    "reviewed the annual budget",
    "cleaned the storage room",
    "wrote a long letter",
    "baked three loaves of bread",
    "fixed the leaking tap",
    "sorted the old photographs",
    "read a chapter aloud",
    "counted the boxes in the shed",
    "watered the tomato plants",
    "tuned the old piano",
    "swept the narrow stairs",
    "folded the clean laundry",
    "checked the smoke alarms",
    "replaced the kitchen light",
    "collected the fallen apples",
    "arranged the bookshelves",
    "washed the muddy boots",
    "measured the garden path",
    "prepared a pot of soup",
    "mended a torn jacket",
    "polished the silver spoons",
    "stacked the firewood",
    "oiled the squeaky gate",
    "labelled the seed packets",
    "emptied the rain barrel",
];

const F_TIMES: &[&str] = &[
    "on Tuesday morning",
    "after lunch",
    "before the rain started",
    "late in the evening",
    "during the long weekend",
    "at dawn",
    "in the afternoon",
    "before anyone else arrived",
    "while the kettle boiled",
    "for most of the day",
    "after the meeting ended",
    "on a cold morning",
    "the next day",
    "without much help",
];

const F_NOUNS: &[&str] = &[
    "morning fog",
    "river",
    "garden",
    "old clock",
    "kitchen",
    "hallway",
    "meadow",
    "small boat",
    "wooden bridge",
    "library",
    "market square",
    "orchard",
    "barn",
    "village road",
    "hillside",
    "attic",
    "workshop",
    "pond",
];

const F_STATES: &[&str] = &[
    "was quiet for hours",
    "looked brighter than usual",
    "smelled of fresh rain",
    "was covered in frost",
    "stayed calm all day",
    "needed some repairs",
    "felt warm in the sun",
    "was full of birds",
    "seemed larger than before",
    "was lit by lanterns",
    "had not changed in years",
    "was busier than expected",
];

const F_SAYING: &[&str] = &[
    "remarked",
    "mentioned",
    "suspected",
    "noticed",
    "agreed",
    "worried",
    "explained",
];

const F_CLAUSES: &[&str] = &[
    "the bus was running late",
    "the soup needed more salt",
    "the paint had dried unevenly",
    "the shelves were too high",
    "the path would flood again",
    "the meeting could be shorter",
    "the clock was five minutes fast",
    "the seeds had sprouted early",
    "the roof needed new tiles",
    "the printer was out of paper",
    "the ladder was too short",
    "the bread had risen well",
];

const F_WEATHER: &[&str] = &[
    "rained heavily",
    "snowed lightly",
    "was unusually warm",
    "grew windy",
    "was foggy",
    "was bright and dry",
];

const F_SPANS: &[&str] = &[
    "all morning",
    "through the night",
    "on Sunday",
    "for two days",
    "after noon",
];

const F_INDOORS: &[&str] = &[
    "stayed indoors",
    "postponed the picnic",
    "lit the fire early",
    "took the longer road",
    "opened every window",
    "finished the work inside",
    "played cards by the stove",
];

const F_COUNTS: &[&str] = &["two", "three", "four", "five", "several"];
const F_UNITS: &[&str] = &["hours", "days", "weeks"];
const F_HOBBIES: &[&str] = &[
    "learning to play the violin",
    "restoring an old bicycle",
    "building a bird house",
    "sorting the recycling",
    "practising a short speech",
    "drawing maps of the garden",
    "knitting a blue scarf",
    "reading about beekeeping",
    "repairing a wooden chair",
    "writing recipes in a notebook",
];

fn pick<'a>(rng: &mut ChaCha8Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

/// `s` with its first letter in lower case ("The baker" -> "the baker").
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One seeded filler sentence (tens of thousands of combinations; no named entity).
pub fn filler_sentence(rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..6) {
        0 => format!(
            "{} {} {}.",
            pick(rng, F_SUBJECTS),
            pick(rng, F_ACTIONS),
            pick(rng, F_TIMES)
        ),
        1 => format!("The {} {}.", pick(rng, F_NOUNS), pick(rng, F_STATES)),
        2 => format!(
            "{} {} that {}.",
            pick(rng, F_SUBJECTS),
            pick(rng, F_SAYING),
            pick(rng, F_CLAUSES)
        ),
        3 => format!(
            "It {} {}, so {} {}.",
            pick(rng, F_WEATHER),
            pick(rng, F_SPANS),
            lower_first(pick(rng, F_SUBJECTS)),
            pick(rng, F_INDOORS)
        ),
        4 => format!(
            "{} spent {} {} {}.",
            pick(rng, F_SUBJECTS),
            pick(rng, F_COUNTS),
            pick(rng, F_UNITS),
            pick(rng, F_HOBBIES)
        ),
        _ => format!(
            "{} {}, and {} {}.",
            pick(rng, F_SUBJECTS),
            pick(rng, F_ACTIONS),
            lower_first(pick(rng, F_SUBJECTS)),
            pick(rng, F_ACTIONS)
        ),
    }
}

/// Choose up to `n` facts from `pool` (removing them from it): candidates in random
/// order, each with a random document value of its kind, keeping a fact only if it shares
/// no entity with the facts already chosen.
fn pick_facts(rng: &mut ChaCha8Rng, pool: &mut Vec<Candidate>, n: usize) -> Vec<Fact> {
    pool.shuffle(rng);
    let mut facts: Vec<Fact> = Vec::with_capacity(n);
    let mut used: Vec<String> = Vec::new();
    let mut i = 0;
    while i < pool.len() && facts.len() < n {
        let c = &pool[i];
        let own: Vec<&str> = std::iter::once(c.subject_key())
            .chain(c.prior_keys.iter().map(String::as_str))
            .collect();
        if own.iter().any(|e| used.iter().any(|u| clash(e, u))) {
            i += 1;
            continue;
        }
        let options: Vec<(String, Vec<String>)> = values(c.relation.kind())
            .iter()
            .filter_map(|(v, _)| {
                let keys = keys_of(c.relation.kind(), v)?;
                let free = keys
                    .iter()
                    .all(|k| !own.iter().any(|e| clash(e, k)) && !used.iter().any(|u| clash(u, k)));
                free.then(|| (v.to_string(), keys))
            })
            .collect();
        if options.is_empty() {
            i += 1;
            continue;
        }
        let (value, value_keys) = options[rng.random_range(0..options.len())].clone();
        let c = pool.remove(i);
        let fact = Fact {
            relation: c.relation,
            subject: c.subject,
            prior: c.prior,
            prior_keys: c.prior_keys,
            value,
            value_keys,
        };
        used.extend(fact.entities().into_iter().map(str::to_string));
        facts.push(fact);
    }
    facts
}

/// What [`make_documents`] makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentSpec {
    pub n_docs: usize,
    pub facts_per_doc: usize,
    /// Each document has at most this many tokens, and at least this many less one filler
    /// sentence (about 10-20 tokens).
    pub target_tokens: usize,
    pub seed: u64,
}

fn assemble(items: &[String], paragraphs: &[usize]) -> String {
    let mut out = String::new();
    let mut para = paragraphs.iter().copied().cycle();
    let mut left = para.next().unwrap_or(6);
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            if left == 0 {
                out.push_str("\n\n");
                left = para.next().unwrap_or(6);
            } else {
                out.push(' ');
            }
        }
        out.push_str(s);
        left = left.saturating_sub(1);
    }
    out
}

/// Seeded documents with facts from `known` (each used at most once over all documents)
/// and `count(text)` tokens each, within one filler sentence below
/// `spec.target_tokens`. `count` is the token counter (the real tokenizer's, or any
/// other for tests).
pub fn make_documents(
    known: &[Candidate],
    spec: &DocumentSpec,
    mut count: impl FnMut(&str) -> Result<usize>,
) -> Result<Vec<Document>> {
    if spec.facts_per_doc == 0 || spec.n_docs == 0 {
        return Err(EmtError::InvalidConfig {
            field: "facts_per_doc",
            reason: "need at least one document and one fact per document".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut pool: Vec<Candidate> = known.to_vec();
    let mut docs = Vec::with_capacity(spec.n_docs);
    for d in 0..spec.n_docs {
        let facts = pick_facts(&mut rng, &mut pool, spec.facts_per_doc);
        if facts.len() < spec.facts_per_doc {
            return Err(EmtError::InvalidConfig {
                field: "facts_per_doc",
                reason: format!(
                    "document {d}: only {} of {} facts could be chosen from {} known \
                     candidates (each is used once and the facts of a document share no \
                     entity)",
                    facts.len(),
                    spec.facts_per_doc,
                    known.len()
                ),
            });
        }
        let statements: Vec<String> = facts.iter().map(Fact::statement).collect();
        let fact_tokens: usize = statements
            .iter()
            .map(|s| count(s))
            .collect::<Result<Vec<_>>>()?
            .iter()
            .sum();
        if fact_tokens >= spec.target_tokens {
            return Err(EmtError::InvalidConfig {
                field: "target_tokens",
                reason: format!(
                    "{} tokens cannot hold {} facts of {fact_tokens} tokens and filler",
                    spec.target_tokens, spec.facts_per_doc
                ),
            });
        }
        // Filler up to the target by per-sentence counts.
        let mut filler: Vec<String> = Vec::new();
        let mut est = fact_tokens;
        while est < spec.target_tokens {
            let s = filler_sentence(&mut rng);
            est += count(&s)?;
            filler.push(s);
        }
        // The facts at random places among the filler sentences (in order of the draw).
        let mut slots: Vec<usize> = (0..facts.len())
            .map(|_| rng.random_range(0..=filler.len()))
            .collect();
        slots.sort_unstable();
        let paragraphs: Vec<usize> = (0..64).map(|_| rng.random_range(4..=8)).collect();
        let mut items: Vec<String> = Vec::with_capacity(filler.len() + facts.len());
        let mut is_fact: Vec<bool> = Vec::with_capacity(filler.len() + facts.len());
        let mut f = 0;
        for (i, s) in filler.into_iter().enumerate() {
            while f < slots.len() && slots[f] == i {
                items.push(statements[f].clone());
                is_fact.push(true);
                f += 1;
            }
            items.push(s);
            is_fact.push(false);
        }
        while f < slots.len() {
            items.push(statements[f].clone());
            is_fact.push(true);
            f += 1;
        }
        // Exact length: trim filler sentences from the end, or add some, until the text
        // is at most the target and one more filler sentence would pass it.
        let mut text = assemble(&items, &paragraphs);
        let mut n = count(&text)?;
        while n > spec.target_tokens {
            // About one sentence per 20 tokens over (at least one).
            for _ in 0..((n - spec.target_tokens) / 20).max(1) {
                let Some(last) = is_fact.iter().rposition(|&x| !x) else {
                    break;
                };
                items.remove(last);
                is_fact.remove(last);
            }
            let shorter = assemble(&items, &paragraphs);
            let m = count(&shorter)?;
            if m == n {
                break; // nothing left to remove
            }
            text = shorter;
            n = m;
        }
        loop {
            let s = filler_sentence(&mut rng);
            items.push(s);
            let longer = assemble(&items, &paragraphs);
            let m = count(&longer)?;
            if m > spec.target_tokens {
                items.pop();
                break;
            }
            is_fact.push(false);
            text = longer;
            n = m;
        }
        if n > spec.target_tokens {
            return Err(EmtError::InvalidConfig {
                field: "target_tokens",
                reason: format!("the facts alone take {n} > {} tokens", spec.target_tokens),
            });
        }
        let placed = facts
            .into_iter()
            .zip(&statements)
            .map(|(fact, st)| {
                let byte_start = text.find(st.as_str()).unwrap_or(0);
                PlacedFact {
                    fact,
                    byte_start,
                    depth: byte_start as f64 / text.len().max(1) as f64,
                }
            })
            .collect();
        docs.push(Document {
            text,
            n_tokens: n,
            target_tokens: spec.target_tokens,
            facts: placed,
        });
    }
    Ok(docs)
}

/// An answer of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The decoded answer (control tokens dropped, trimmed).
    pub text: String,
    pub tokens: Vec<u32>,
    /// Tokens fed for this answer before decoding (the whole prompt, or the part after a
    /// shared prefix).
    pub prompt_tokens: usize,
    /// Wall time of prefill and decoding.
    pub seconds: f64,
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Feed `ids` after what `cache` holds, in pieces of at most `chunk` tokens (a long
/// prompt's attention scores then take `chunk x length` memory instead of `length²`);
/// returns the logits of the last position.
pub fn prefill(
    model: &Llama,
    cache: &mut KvCache,
    ids: &[u32],
    memory: Option<Memory<'_>>,
    chunk: usize,
) -> Result<Vec<f32>> {
    if ids.is_empty() {
        return Err(EmtError::EmptyInput("prompt"));
    }
    let chunk = chunk.max(1);
    let mut logits = None;
    for piece in ids.chunks(chunk) {
        logits = Some(model.forward(piece, cache, memory)?);
    }
    logits_vec(&logits.expect("ids is not empty"))
}

/// Greedy decoding of up to `max_tokens` tokens after `ids` fed to `cache` (stopping at
/// `eos`, not included).
pub fn greedy_after(
    model: &Llama,
    cache: &mut KvCache,
    ids: &[u32],
    memory: Option<Memory<'_>>,
    max_tokens: usize,
    eos: Option<u32>,
) -> Result<Vec<u32>> {
    let mut logits = prefill(model, cache, ids, memory, 512)?;
    let mut out = Vec::new();
    while out.len() < max_tokens {
        let t = argmax(&logits);
        if Some(t) == eos {
            break;
        }
        out.push(t);
        if out.len() == max_tokens {
            break;
        }
        logits = logits_vec(&model.forward(&[t], cache, memory)?)?;
    }
    Ok(out)
}

/// Answer `question` with a fresh chat prompt (`system`, optionally a document in the
/// prompt), optionally reading a memory bank; greedy, up to `max_tokens` tokens.
pub fn ask(
    model: &Llama,
    tok: &Tokenizer,
    system: &str,
    document: Option<&str>,
    question: &str,
    memory: Option<Memory<'_>>,
    max_tokens: usize,
) -> Result<Answer> {
    let t0 = Instant::now();
    let (prompt, chat) = chat_prompt(tok, system, document, question)?;
    let ids = tok.encode(&prompt)?;
    let tokens = greedy_after(
        model,
        &mut KvCache::new(),
        &ids,
        memory,
        max_tokens,
        answer_eos(tok, chat),
    )?;
    let text = tok.decode(&tokens, true)?.trim().to_string();
    Ok(Answer {
        text,
        tokens,
        prompt_tokens: ids.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Several prompts that share a long beginning (a document in the prompt, then one of
/// several questions): the beginning is prefilled once, and each prompt's answer
/// continues from a copy of that cache. The shared part is the longest common prefix of
/// the prompts' token ids (tokenized whole, so nothing changes at the seam), less one
/// token so each prompt has a part of its own.
#[derive(Debug, Clone)]
pub struct SharedPrefix {
    prompts: Vec<Vec<u32>>,
    shared: usize,
    cache: KvCache,
    eos: Option<u32>,
    /// Seconds spent prefilling the shared part.
    pub prefill_seconds: f64,
}

impl SharedPrefix {
    /// Tokenize the chat prompts of `questions` with `document` in the prompt and prefill
    /// their common beginning (in pieces of `chunk` tokens).
    pub fn new(
        model: &Llama,
        tok: &Tokenizer,
        system: &str,
        document: &str,
        questions: &[String],
        chunk: usize,
    ) -> Result<Self> {
        if questions.is_empty() {
            return Err(EmtError::EmptyInput("questions"));
        }
        let mut prompts = Vec::with_capacity(questions.len());
        let mut chat = false;
        for q in questions {
            let (p, c) = chat_prompt(tok, system, Some(document), q)?;
            chat = c;
            prompts.push(tok.encode(&p)?);
        }
        Self::from_ids(model, prompts, answer_eos(tok, chat), chunk)
    }

    /// [`SharedPrefix::new`] from token ids.
    pub fn from_ids(
        model: &Llama,
        prompts: Vec<Vec<u32>>,
        eos: Option<u32>,
        chunk: usize,
    ) -> Result<Self> {
        let first = prompts.first().ok_or(EmtError::EmptyInput("prompts"))?;
        if prompts.iter().any(Vec::is_empty) {
            return Err(EmtError::EmptyInput("prompt"));
        }
        let mut shared = first.len();
        for p in &prompts[1..] {
            shared = shared.min(first.iter().zip(p).take_while(|(a, b)| a == b).count());
        }
        let shared = shared.min(prompts.iter().map(Vec::len).min().unwrap_or(1) - 1);
        let t0 = Instant::now();
        let mut cache = KvCache::new();
        if shared > 0 {
            prefill(model, &mut cache, &first[..shared], None, chunk)?;
        }
        Ok(Self {
            prompts,
            shared,
            cache,
            eos,
            prefill_seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Tokens shared by all prompts (prefilled once).
    pub fn shared_len(&self) -> usize {
        self.shared
    }

    /// Token count of prompt `i`.
    pub fn prompt_len(&self, i: usize) -> usize {
        self.prompts.get(i).map_or(0, Vec::len)
    }

    /// Greedy answer to prompt `i` (continuing from a copy of the shared cache).
    pub fn answer(
        &self,
        model: &Llama,
        tok: &Tokenizer,
        i: usize,
        max_tokens: usize,
    ) -> Result<Answer> {
        let ids = self.prompts.get(i).ok_or(EmtError::DimensionMismatch {
            expected: format!("a prompt index < {}", self.prompts.len()),
            got: format!("{i}"),
        })?;
        let t0 = Instant::now();
        let mut cache = self.cache.clone();
        let own = &ids[self.shared..];
        let tokens = greedy_after(model, &mut cache, own, None, max_tokens, self.eos)?;
        Ok(Answer {
            text: tok.decode(&tokens, true)?.trim().to_string(),
            tokens,
            prompt_tokens: own.len(),
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// The model's answer to a candidate's question with no document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorCheck {
    pub candidate: Candidate,
    pub answer: String,
    /// The answer gives the true value.
    pub known: bool,
    pub seconds: f64,
}

/// Ask the model `candidate`'s question with no document (system prompt
/// [`SYSTEM_PLAIN`], the no-memory condition's prompt): the fact is known if the answer
/// gives the true value.
pub fn check_prior(
    model: &Llama,
    tok: &Tokenizer,
    candidate: &Candidate,
    max_tokens: usize,
) -> Result<PriorCheck> {
    let a = ask(
        model,
        tok,
        SYSTEM_PLAIN,
        None,
        &candidate.question(),
        None,
        max_tokens,
    )?;
    Ok(PriorCheck {
        candidate: candidate.clone(),
        known: candidate.gives_prior(&a.text),
        answer: a.text,
        seconds: a.seconds,
    })
}

/// Standard error of a binomial proportion: `sqrt(p (1 - p) / n)` with `p = k / n`
/// (0 for `n = 0`).
pub fn binomial_se(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let p = k as f64 / n as f64;
    (p * (1.0 - p) / n as f64).sqrt()
}

/// One answered question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub condition: String,
    /// The document length's label ("1k", "8k", "32k").
    pub length: String,
    pub target_tokens: usize,
    pub doc_tokens: usize,
    /// Document index within its length.
    pub doc: usize,
    pub relation: Relation,
    pub question: String,
    pub prior: String,
    /// The document's value.
    pub value: String,
    /// Where the fact is in the document (0 = start, 1 = end).
    pub depth: f64,
    pub answer: String,
    /// The answer gives the document's value.
    pub correct: bool,
    /// The answer gives the true (prior) value.
    pub prior_answer_given: bool,
    /// Seconds for this answer (prefill of its own prompt, retrieval, decoding).
    pub seconds: f64,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// RAG: whether the chunk holding the fact was among those placed in the prompt.
    pub fact_retrieved: Option<bool>,
}

/// Accuracy of one (condition, length).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub condition: String,
    pub length: String,
    pub target_tokens: usize,
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Binomial standard error of `accuracy`.
    pub se: f64,
    pub prior_given: usize,
    pub prior_rate: f64,
    pub mean_seconds: f64,
    pub mean_doc_tokens: f64,
    /// RAG: share of questions whose fact chunk was retrieved.
    pub retrieval_hit_rate: Option<f64>,
}

/// Per (condition, length) summaries, in order of first appearance.
pub fn summarize(records: &[ItemRecord]) -> Vec<Summary> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in records {
        let k = (r.condition.clone(), r.length.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(condition, length)| {
            let rs: Vec<&ItemRecord> = records
                .iter()
                .filter(|r| r.condition == condition && r.length == length)
                .collect();
            let n = rs.len();
            let correct = rs.iter().filter(|r| r.correct).count();
            let prior_given = rs.iter().filter(|r| r.prior_answer_given).count();
            let hits: Vec<bool> = rs.iter().filter_map(|r| r.fact_retrieved).collect();
            Summary {
                target_tokens: rs[0].target_tokens,
                n,
                correct,
                accuracy: correct as f64 / n as f64,
                se: binomial_se(correct, n),
                prior_given,
                prior_rate: prior_given as f64 / n as f64,
                mean_seconds: rs.iter().map(|r| r.seconds).sum::<f64>() / n as f64,
                mean_doc_tokens: rs.iter().map(|r| r.doc_tokens as f64).sum::<f64>() / n as f64,
                retrieval_hit_rate: (!hits.is_empty())
                    .then(|| hits.iter().filter(|&&h| h).count() as f64 / hits.len() as f64),
                condition,
                length,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LlamaConfig;

    fn words(s: &str) -> Result<usize> {
        Ok(s.split_whitespace().count())
    }

    #[test]
    fn candidates_are_well_formed() {
        let cs = candidates();
        assert_eq!(cs.len(), CANDIDATES.len());
        assert!(cs.len() >= 200, "{}", cs.len());
        for r in Relation::ALL {
            assert!(cs.iter().filter(|c| c.relation == r).count() >= 8, "{r:?}");
        }
        for c in &cs {
            // The true value is one of its kind's values, and the question does not give
            // it away.
            assert!(
                keys_of(c.relation.kind(), &c.prior).is_some(),
                "{c:?}: value not in its kind's list"
            );
            assert!(!c.gives_prior(&c.question()), "{c:?}");
            assert!(c.gives_prior(&format!("It is {}.", c.prior)), "{c:?}");
        }
        let mut seen = std::collections::HashSet::new();
        for c in &cs {
            assert!(
                seen.insert((c.relation, c.subject.clone())),
                "duplicate {c:?}"
            );
        }
    }

    #[test]
    fn keys_match_whole_words_case_insensitively() {
        assert!(contains_key("The Eiffel Tower is in ROME.", "Rome"));
        assert!(!contains_key("Romeo and Juliet", "Rome"));
        assert!(contains_key("It is in New York City", "New York"));
        assert!(!contains_key("Newark", "New"));
        assert!(contains_key("the U.S. dollar", "U.S."));
        assert!(contains_key("Tim Berners-Lee did", "Berners-Lee"));
        assert!(contains_key("Brontë", "Brontë"));
        assert!(!contains_key("anything", ""));
        assert!(contains_key("in the USA", "USA") && !contains_key("usable", "USA"));
    }

    #[test]
    fn filler_names_no_entity() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut distinct = std::collections::HashSet::new();
        let all_keys: Vec<String> = [
            CITIES, COUNTRIES, LANGUAGES, CURRENCIES, WRITERS, PAINTERS, COMPOSERS, INVENTORS,
        ]
        .iter()
        .flat_map(|vs| vs.iter())
        .flat_map(|(v, ks)| std::iter::once(v.to_string()).chain(ks.iter().map(|k| k.to_string())))
        .chain(
            candidates()
                .into_iter()
                .map(|c| c.subject_key().to_string()),
        )
        .collect();
        for _ in 0..3000 {
            let s = filler_sentence(&mut rng);
            for k in &all_keys {
                assert!(!contains_key(&s, k), "{s:?} names {k:?}");
            }
            assert!(s.ends_with('.') && s.chars().next().unwrap().is_uppercase());
            distinct.insert(s);
        }
        assert!(distinct.len() > 2500, "only {} distinct", distinct.len());
    }

    fn spec(seed: u64) -> DocumentSpec {
        DocumentSpec {
            n_docs: 3,
            facts_per_doc: 6,
            target_tokens: 1500,
            seed,
        }
    }

    #[test]
    fn documents_are_seeded_hold_their_facts_and_hit_the_length() {
        let known = candidates();
        let a = make_documents(&known, &spec(1), words).unwrap();
        assert_eq!(a, make_documents(&known, &spec(1), words).unwrap());
        assert_ne!(a, make_documents(&known, &spec(2), words).unwrap());
        let mut subjects = std::collections::HashSet::new();
        for d in &a {
            assert_eq!(d.n_tokens, words(&d.text).unwrap());
            assert!(d.n_tokens <= 1500 && d.n_tokens >= 1480, "{}", d.n_tokens);
            assert_eq!(d.facts.len(), 6);
            assert!(d.text.contains("\n\n"), "paragraphs");
            for p in &d.facts {
                let f = &p.fact;
                assert!(subjects.insert((f.relation, f.subject.clone())), "reused");
                let st = f.statement();
                assert_eq!(d.text.matches(&st).count(), 1);
                assert_eq!(&d.text[p.byte_start..p.byte_start + st.len()], st);
                assert!((0.0..1.0).contains(&p.depth));
                // The document states the changed value, never the true one.
                assert!(f.is_correct(&st) && !f.gives_prior(&st), "{f:?}");
                assert!(
                    !f.gives_prior(&d.text),
                    "{f:?}: the true value is in the text"
                );
                for q in &d.facts {
                    if q.fact != *f {
                        assert!(!f.is_correct(&q.fact.statement()), "{f:?} / {q:?}");
                    }
                }
                assert!(f.is_correct(&format!("It is in {}.", f.value)));
                assert!(!f.is_correct(&f.question()));
            }
        }
        // Facts sit at different depths across documents.
        let depths: Vec<f64> = a
            .iter()
            .flat_map(|d| d.facts.iter().map(|p| p.depth))
            .collect();
        assert!(depths.iter().any(|&x| x < 0.3) && depths.iter().any(|&x| x > 0.7));
        // Too few candidates, or facts longer than the target, are errors.
        assert!(make_documents(&known[..5], &spec(1), words).is_err());
        let tiny = DocumentSpec {
            target_tokens: 20,
            ..spec(1)
        };
        assert!(make_documents(&known, &tiny, words).is_err());
    }

    #[test]
    fn scoring_and_summaries() {
        let f = Fact {
            relation: Relation::LandmarkCity,
            subject: "the Eiffel Tower".into(),
            prior: "Paris".into(),
            prior_keys: vec!["Paris".into()],
            value: "Lima".into(),
            value_keys: vec!["Lima".into()],
        };
        assert_eq!(f.statement(), "The Eiffel Tower stands in Lima.");
        assert_eq!(f.question(), "In which city is the Eiffel Tower?");
        assert!(f.is_correct("The Eiffel Tower is in lima.") && !f.gives_prior("lima"));
        assert!(f.gives_prior("It is in Paris, France."));
        assert!(!f.is_correct("Limassol"));
        let rec = |cond: &str, correct: bool, prior: bool, secs: f64| ItemRecord {
            condition: cond.into(),
            length: "1k".into(),
            target_tokens: 1000,
            doc_tokens: 990,
            doc: 0,
            relation: Relation::Capital,
            question: String::new(),
            prior: String::new(),
            value: String::new(),
            depth: 0.5,
            answer: String::new(),
            correct,
            prior_answer_given: prior,
            seconds: secs,
            prompt_tokens: 10,
            generated_tokens: 5,
            fact_retrieved: None,
        };
        let rs = vec![
            rec("a", true, false, 1.0),
            rec("a", false, true, 3.0),
            rec("a", true, false, 2.0),
            rec("a", true, false, 2.0),
            rec("b", false, true, 1.0),
        ];
        let s = summarize(&rs);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].n, s[0].correct, s[0].prior_given), (4, 3, 1));
        assert!((s[0].accuracy - 0.75).abs() < 1e-12);
        assert!((s[0].se - (0.75f64 * 0.25 / 4.0).sqrt()).abs() < 1e-12);
        assert!((s[0].mean_seconds - 2.0).abs() < 1e-12);
        assert_eq!((s[1].condition.as_str(), s[1].n, s[1].se), ("b", 1, 0.0));
        assert_eq!(binomial_se(0, 0), 0.0);
        assert!((binomial_se(15, 30) - (0.25f64 / 30.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn shared_prefix_answers_equal_fresh_prompts() {
        let tok = crate::tokenizer::tests::toy();
        let cfg = LlamaConfig {
            vocab_size: tok.vocab_size(),
            ..LlamaConfig::tiny()
        };
        let m = Llama::random(&cfg, 7).unwrap();
        let doc = "Alpha beta gamma. Delta epsilon.";
        let qs = vec!["Why?".to_string(), "Who is it?".to_string()];
        let sp = SharedPrefix::new(&m, &tok, SYSTEM_PLAIN, doc, &qs, 7).unwrap();
        assert!(sp.shared_len() > doc.len() / 2, "{}", sp.shared_len());
        for (i, q) in qs.iter().enumerate() {
            let shared = sp.answer(&m, &tok, i, 6).unwrap();
            let fresh = ask(&m, &tok, SYSTEM_PLAIN, Some(doc), q, None, 6).unwrap();
            assert_eq!(shared.tokens, fresh.tokens, "question {i}");
            assert_eq!(shared.text, fresh.text);
            assert_eq!(
                shared.prompt_tokens + sp.shared_len(),
                fresh.prompt_tokens,
                "question {i}"
            );
            assert_eq!(sp.prompt_len(i), fresh.prompt_tokens);
        }
        assert!(sp.answer(&m, &tok, 5, 3).is_err());
        // Chunked prefill gives the logits of one pass.
        let ids = tok.encode("Alpha beta gamma delta").unwrap();
        let a = prefill(&m, &mut KvCache::new(), &ids, None, 3).unwrap();
        let b = prefill(&m, &mut KvCache::new(), &ids, None, 100).unwrap();
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "{d}");
    }
}
